"""The dashboard's ``/``: ``static/index.html`` with the data its first paint needs embedded.

A page that has to ask ``/health`` and then ``/api/runs`` before it can ask for its first chart waits
for two round trips after its ES modules load. Instead the server writes those answers into the page
itself (``<script id="boot-data" type="application/json">``), with the tag of the top card (which the
page asks for at once, while its modules load), taken at one instant: the hub's queued
points are flushed first, so ``seq`` covers exactly the runs and tags listed and the page subscribes
with ``since=seq`` (the same rule as ``/api/series``). The page reads it once, at load; a reload after
a reset asks the routes again.

The top card's series themselves come too, at the end of ``<body>`` (``<script id="first-series">``,
the very JSON ``GET /api/series?run=*&tag=FIRST`` answers, same ``seq``), when that is exactly what the
page would fetch: every series of that card has at most :data:`EMBED_SERIES_POINTS` points (the smallest
``max_points`` the page asks for, so no decimation depends on the client's width) and all of them
together at most :data:`EMBED_POINTS`. Then the page's first chart waits for no request at all (on 2
cores, the one it made queued behind the 22 module requests and their serving: 100-200 ms). The page
uses them only in its default view (no run/tag/pin/hide in the URL, no pins saved in
``localStorage``, which the server cannot see); otherwise it drops them and fetches as before. The
element sits after everything else, so the preload scanner finds the module links first, and the
server writes it last, encoded series by series, after the rest of the page has gone out.

Who gets it: ``/`` is behind the token like ``/api/runs`` (``security.py``), so the embedded data only
goes to a caller who could have fetched it; the page is sent ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lightning_stream.encoding import dumps
from lightning_stream.hub import Hub
from lightning_stream.series import Window
from lightning_stream.wire import series_json_chunks

__all__ = [
    "BOOT_ELEMENT",
    "EMBED_POINTS",
    "EMBED_SERIES_POINTS",
    "SERIES_ELEMENT",
    "boot_json",
    "first_card",
    "first_tag",
    "index_chunks",
    "render_index",
]

#: the element ``static/index.html`` carries (``null``: no data, the page asks the routes itself)
BOOT_ELEMENT = '<script id="boot-data" type="application/json">null</script>'
#: the element at the end of its ``<body>`` for the top card's series (``null``: the page fetches them)
SERIES_ELEMENT = '<script id="first-series" type="application/json">null</script>'
#: points of one series at most: the page never asks for fewer (``Math.max(400, ...)``, index.html, loader.js)
EMBED_SERIES_POINTS = 400
#: points of the whole card at most (300 runs x 200 steps = 60,000 points are ~2.5 MB of JSON)
EMBED_POINTS = 100_000


def boot_json(boot: Mapping[str, Any]) -> str:
    """``boot`` as JSON that cannot end the ``<script>`` element it sits in.

    Every ``<`` (only ever inside a string: a run or tag name such as ``</script>``) is written as
    ``\\u003c``, so neither ``</script`` nor ``<!--`` can appear; ``JSON.parse`` reads the same text.
    """
    return dumps(dict(boot)).decode().replace("<", "\\u003c")


def first_tag(runs: Iterable[Mapping[str, Any]]) -> str | None:
    """The tag of the dashboard's top card in its default view, or None without any tag.

    Cards are grouped by the text before the first ``/`` (none: the group at the top), groups and
    the tags in them in name order (``static/js/layout.js``). The page asks for this card's history
    before its modules have loaded (``index.html``), so it must agree with that order.
    """
    tags = {tag for run in runs for tag in run.get("tags", ())}
    return min(tags, key=lambda tag: (tag[: tag.find("/")] if tag.find("/") > 0 else "", tag), default=None)


def first_card(hub: Hub, runs: Iterable[Mapping[str, Any]], tag: str | None) -> list[Window] | None:
    """Every series of ``tag`` whole, in ``/api/series`` order (by run), or None when the page must fetch
    them: no such tag, a series longer than :data:`EMBED_SERIES_POINTS` (the answer would depend on the
    page's width), or more than :data:`EMBED_POINTS` in all. Sized before anything is copied; call it
    with no await after the ``hub.flush()`` that ``runs`` and ``seq`` were taken after."""
    if tag is None:
        return None
    names = [run["run"] for run in runs if tag in run.get("tags", ())]
    sizes = [hub.held(name, tag) for name in names]
    if not names or max(sizes) > EMBED_SERIES_POINTS or sum(sizes) > EMBED_POINTS:
        return None
    return [hub.window(name, tag) for name in names]


def render_index(template: str, boot: Mapping[str, Any]) -> str:
    """``template`` (``static/index.html``) with ``boot`` in its boot element; unchanged without one."""
    element = BOOT_ELEMENT.replace(">null<", f">{boot_json(boot)}<")
    return template.replace(BOOT_ELEMENT, element, 1)


def index_chunks(template: str, boot: Mapping[str, Any], seq: int, card: list[Window] | None) -> Iterator[bytes]:
    """The page: ``boot`` (plus ``first_embedded``, whether ``card`` is in it) and ``card`` as the
    ``/api/series`` answer at ``seq`` in the series element, in pieces: everything before that element
    first, then the series as they are encoded (``wire.series_json_chunks``), ``<`` as ``\\u003c``
    (only ever inside a run or tag name) so the JSON cannot end its element."""
    embedded = card is not None and SERIES_ELEMENT in template
    page = render_index(template, {**boot, "first_embedded": embedded})
    if card is None or not embedded:
        yield page.encode()
        return
    head, _, tail = page.partition(SERIES_ELEMENT)
    yield (head + SERIES_ELEMENT.removesuffix("null</script>")).encode()
    for chunk in series_json_chunks(seq, card):
        yield chunk.replace(b"<", b"\\u003c")
    yield ("</script>" + tail).encode()

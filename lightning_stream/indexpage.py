"""The dashboard's ``/``: ``static/index.html`` with the data its first paint needs embedded.

A page that has to ask ``/health`` and then ``/api/runs`` before it can ask for its first chart waits
for two round trips after its ES modules load. Instead the server writes those answers into the page
itself (``<script id="boot-data" type="application/json">``), with the tag of the top card (which the
page asks for at once, while its modules load), taken at one instant: the hub's queued
points are flushed first, so ``seq`` covers exactly the runs and tags listed and the page subscribes
with ``since=seq`` (the same rule as ``/api/series``). The page reads it once, at load; a reload after
a reset asks the routes again.

Who gets it: ``/`` is behind the token like ``/api/runs`` (``security.py``), so the embedded data only
goes to a caller who could have fetched it; the page is sent ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning_stream.encoding import dumps

__all__ = ["BOOT_ELEMENT", "boot_json", "first_tag", "render_index"]

#: the element ``static/index.html`` carries (``null``: no data, the page asks the routes itself)
BOOT_ELEMENT = '<script id="boot-data" type="application/json">null</script>'


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


def render_index(template: str, boot: Mapping[str, Any]) -> str:
    """``template`` (``static/index.html``) with ``boot`` in its boot element; unchanged without one."""
    element = BOOT_ELEMENT.replace(">null<", f">{boot_json(boot)}<")
    return template.replace(BOOT_ELEMENT, element, 1)

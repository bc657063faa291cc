"""``GET /api/series``: many series in one columnar body (JSON), or streamed CSV rows.

Query (every parameter optional)::

    run=GLOB  tag=GLOB          which series (fnmatch, as on /stream; absent means '*'); tag= may be
                                repeated (at most MAX_TAGS times): the union of what each matches
    start_step=A  end_step=B    inclusive step window (either side may be open)
    max_points=N                per series, at most N points (2 <= N <= 1,000,000): min/max buckets,
                                first and last point of the window kept (``Series.window``)
    format=json|csv             json (default) or CSV rows ``run,tag,step,wall_time,value``

Globs are filters, so one that matches nothing is ``200`` with an empty list. A
name without glob characters (``*?[``) is a lookup, as on ``/api/scalars``: an
unknown run is ``404``, and so is an unknown tag of such an exact run; a run glob
with an exact tag stays a filter (runs without the tag are left out). Unknown
parameters are ``400``, so a typo such as ``max_point=`` does not quietly send
every point.

JSON carries the hub's ``seq`` taken after queued points were flushed, as
``/api/scalars`` does: subscribe with ``since=seq`` and nothing is missed or
repeated. JSON is written series by series too, each encoded when its turn comes
(the windows are cut first, with no await between, so ``seq`` stays exact). CSV is written series by series in chunks of
:data:`wire.CSV_ROWS_PER_CHUNK` rows (``Transfer-Encoding: chunked``): each
series is copied when its turn comes, so the text of a million-point download
never sits whole in memory, and the points of one series are consistent even if
the run writes meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web
from multidict import MultiMapping

from lightning_stream.config import ServerConfig
from lightning_stream.hub import Hub
from lightning_stream.params import MAX_LIMIT, BadRequest, parse_glob, parse_int
from lightning_stream.security import cors_headers_for, json_error
from lightning_stream.wire import CSV_HEADER, csv_chunks, series_json_chunks

__all__ = ["FORMATS", "MAX_TAGS", "PARAMS", "SeriesQuery", "handle_series", "parse_series_query"]

FORMATS = ("json", "csv")
#: tag= parameters one request may repeat (the dashboard asks for a screenful of charts at once)
MAX_TAGS = 64
PARAMS = ("run", "tag", "start_step", "end_step", "max_points", "format", "token")
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SeriesQuery:
    """A validated ``/api/series`` query."""

    run: str = "*"
    tag: str = "*"
    start_step: int | None = None
    end_step: int | None = None
    max_points: int | None = None
    format: str = "json"
    tags: tuple[str, ...] = ("*",)  # every tag= given (``tag`` is the first): the union is selected


def is_glob(name: str) -> bool:
    return not GLOB_CHARS.isdisjoint(name)


def parse_series_query(query: MultiMapping[str]) -> SeriesQuery:
    """The query, or ``BadRequest`` saying which parameter to fix and how."""
    unknown = sorted(set(query) - set(PARAMS))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown!r}; /api/series takes {', '.join(PARAMS[:-1])}")
    start = None if "start_step" not in query else parse_int(query["start_step"], "start_step")
    end = None if "end_step" not in query else parse_int(query["end_step"], "end_step")
    if start is not None and end is not None and start > end:
        raise BadRequest(
            f"start_step={start} is after end_step={end}; the window is inclusive, so pass start_step <= end_step"
        )
    max_points = None
    if "max_points" in query:
        max_points = parse_int(query["max_points"], "max_points", minimum=2, maximum=MAX_LIMIT)
    fmt = query.get("format", "json")
    if fmt not in FORMATS:
        raise BadRequest(f"format={fmt!r} is not known; use format=json (default) or format=csv")
    given = query.getall("tag", [])
    if len(given) > MAX_TAGS:
        raise BadRequest(
            f"{len(given)} tag= parameters; /api/series takes at most {MAX_TAGS} (a glob such as tag=train/* "
            "selects many tags in one)"
        )
    tags = tuple(parse_glob(t, "tag") for t in given) or ("*",)
    return SeriesQuery(
        run=parse_glob(query.get("run"), "run"),
        tag=tags[0],
        tags=tags,
        start_step=start,
        end_step=end,
        max_points=max_points,
        format=fmt,
    )


def _lookup_error(hub: Hub, q: SeriesQuery) -> web.Response | None:
    """404 when an exact (non-glob) run, or an exact tag of an exact run, is unknown; else None."""
    if is_glob(q.run):
        return None
    if not hub.has_run(q.run):
        known = ", ".join(repr(r["run"]) for r in hub.runs()[:20]) or "none yet"
        return json_error(
            404, f"unknown run {q.run!r}; known runs: {known} (GET /api/runs), or pass a glob such as run=*"
        )
    for tag in q.tags:
        if not is_glob(tag) and tag not in hub.tags(q.run):
            tags = ", ".join(repr(t) for t in hub.tags(q.run)[:50]) or "none yet"
            return json_error(404, f"unknown tag {tag!r} in run {q.run!r}; its tags: {tags}")
    return None


def _select(hub: Hub, q: SeriesQuery) -> list[tuple[str, str]]:
    """(run, tag) of every held series the query selects, sorted: the union over its tag globs."""
    if len(q.tags) == 1:
        return hub.select(q.run, q.tag)
    return sorted({pair for tag in q.tags for pair in hub.select(q.run, tag)})


async def handle_series(request: web.Request, hub: Hub, config: ServerConfig) -> web.StreamResponse:
    try:
        q = parse_series_query(request.query)
    except BadRequest as exc:
        return json_error(400, str(exc))
    missing = _lookup_error(hub, q)
    if missing is not None:
        return missing
    if q.format == "csv":
        return await _stream_csv(request, hub, config, q)
    # Queued points become messages first, so `seq` covers exactly what is returned (no await below).
    hub.flush()
    seq = hub.seq
    windows = [hub.window(run, tag, q.start_step, q.end_step, q.max_points) for run, tag in _select(hub, q)]
    response = web.StreamResponse(
        headers={hdrs.CONTENT_TYPE: "application/json; charset=utf-8", **cors_headers_for(request, config)}
    )
    await response.prepare(request)
    try:
        for chunk in series_json_chunks(seq, windows):  # whole series at a time: see wire.series_json_chunks
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing to answer
    return response


async def _stream_csv(request: web.Request, hub: Hub, config: ServerConfig, q: SeriesQuery) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={hdrs.CONTENT_TYPE: "text/csv; charset=utf-8", **cors_headers_for(request, config)}
    )
    await response.prepare(request)
    try:
        await response.write(CSV_HEADER)
        for run, tag in _select(hub, q):
            try:
                window = hub.window(run, tag, q.start_step, q.end_step, q.max_points)
            except KeyError:  # the hub closed while we were writing
                break
            for chunk in csv_chunks(window.batch):
                await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing to answer
    return response

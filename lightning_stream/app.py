"""The one aiohttp application: REST, SSE, WebSocket, health, metrics, dashboard.

``create_app(state)`` wires the routes of SPEC "HTTP" to a ``Hub``; it knows
nothing about threads, ports or watchers (``server.py`` owns those). Every
answer to bad input is a 4xx ``{"error": ...}``; an unexpected exception is
logged and answered ``500`` with the same shape, never a traceback.

Routes: ``/health`` (no token), ``/api/runs``, ``/api/scalars``, ``/api/series`` (``seriesapi.py``),
``/api/openapi.json``,
``/stream`` (``sse.py``), ``/ws`` (``websocket.py``), ``/metrics``, ``/`` (the
dashboard ``static/index.html``, or a placeholder) and ``/static/NAME`` (the other
files of ``static/``).

``on_shutdown`` ends every SSE stream and closes every WebSocket with 1001
GOING_AWAY, so ``runner.cleanup()`` returns promptly and frees the port.
For prompt detection of vanished SSE clients, run the app with
``web.AppRunner(app, handler_cancellation=True)`` (``tests/apptools.py`` does).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from lightning_stream._version import __version__
from lightning_stream.config import ServerConfig
from lightning_stream.encoding import dumps, rows_json
from lightning_stream.hub import Hub
from lightning_stream.indexpage import first_card, first_tag, index_chunks
from lightning_stream.logs import install as install_log_redaction
from lightning_stream.logs import redact
from lightning_stream.looplag import LoopLagMonitor
from lightning_stream.metrics import MetricSources, make_registry, render
from lightning_stream.openapi import openapi_document
from lightning_stream.params import MAX_LIMIT, BadRequest, parse_int, parse_name
from lightning_stream.security import Handler, json_error, security_middleware, token_ok
from lightning_stream.seriesapi import handle_series
from lightning_stream.sse import SSEStreams
from lightning_stream.staticfiles import StaticFiles
from lightning_stream.websocket import WebSockets

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

PLACEHOLDER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lightning-stream</title></head>
<body><h1>lightning-stream</h1>
<p>The dashboard is not installed. The data is live at
<a href="api/runs">/api/runs</a>, <a href="stream">/stream</a> (SSE), <code>/ws</code> (WebSocket)
and <a href="health">/health</a>.</p></body></html>
"""


def _dumps_text(obj: object) -> str:
    return dumps(obj).decode()


def _no_restarts() -> int:
    return 0


def _no_reader_errors() -> dict[str, int]:
    return {}


def _no_logdirs() -> list[str]:
    return []


@dataclass
class AppState:
    """What the app reads; owned by the server, shared with the app by reference."""

    hub: Hub
    config: ServerConfig
    loop_lag: LoopLagMonitor
    started_monotonic: float = field(default_factory=time.monotonic)
    restarts: Callable[[], int] = _no_restarts
    reader_errors: Callable[[], dict[str, int]] = _no_reader_errors
    logdirs: Callable[[], list[str]] = _no_logdirs


STATE = web.AppKey("lightning_stream_state", AppState)
SSE = web.AppKey("lightning_stream_sse", SSEStreams)
WS = web.AppKey("lightning_stream_ws", WebSockets)


class _Routes:
    def __init__(self, state: AppState, sse: SSEStreams, ws: WebSockets) -> None:
        self.state = state
        self.sse = sse
        self.ws = ws
        self.static_files = StaticFiles(STATIC_DIR)
        self.metric_sources = MetricSources(
            hub_stats=state.hub.stats,
            clients=self.clients,
            loop_lag=state.loop_lag,
            uptime_s=self.uptime_s,
            restarts=state.restarts,
            reader_errors=state.reader_errors,
            ws_errors=lambda: ws.errors_sent,
        )
        self.registry: CollectorRegistry | None = None  # made at the first scrape (metrics.py)

    def clients(self) -> dict[str, int]:
        return {"sse": self.sse.count, "ws": self.ws.count}

    def uptime_s(self) -> float:
        return time.monotonic() - self.state.started_monotonic

    async def health(self, request: web.Request) -> web.Response:
        token = self.state.config.token
        if token is not None and not token_ok(request, token):
            # open for liveness probes, but the logdirs, pid and load are for those who hold the token
            return web.json_response({"status": "ok"})
        return web.json_response(self.health_body())

    def health_body(self, runs: int | None = None) -> dict[str, object]:
        """What ``/health`` tells a token holder (and the dashboard page embeds); ``runs``: their
        number when the caller has listed them already (listing 300 runs costs ~10 ms)."""
        hub = self.state.hub
        stats = hub.stats()
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self.uptime_s(), 3),
            "runs": len(hub.runs()) if runs is None else runs,
            "clients": self.clients(),
            "events_total": int(stats.get("points_in", 0)),
            "loop_lag_ms": round(self.state.loop_lag.lag_ms, 3),
            "seq": hub.seq,
            "logdirs": self.state.logdirs(),
            "restarts": self.state.restarts(),
        }

    async def runs(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.hub.runs(), dumps=_dumps_text)

    async def scalars(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            run = parse_name(query.get("run"), "run")
            tag = parse_name(query.get("tag"), "tag")
            since_step = None if "since_step" not in query else parse_int(query["since_step"], "since_step")
            limit = None if "limit" not in query else parse_int(query["limit"], "limit", minimum=1, maximum=MAX_LIMIT)
        except BadRequest as exc:
            return json_error(400, str(exc))
        hub = self.state.hub
        if not hub.has_run(run):
            known = ", ".join(repr(r["run"]) for r in hub.runs()[:20]) or "none yet"
            return json_error(404, f"unknown run {run!r}; known runs: {known} (GET /api/runs)")
        # Queued points become messages now, so `seq` covers exactly the points returned (no await in
        # between): a client that loads this and then subscribes with since=seq misses nothing and
        # receives nothing twice.
        hub.flush()
        seq = hub.seq
        try:
            batch = hub.scalars(run, tag, since_step=since_step, limit=limit)
        except KeyError:
            tags = ", ".join(repr(t) for t in hub.tags(run)[:50]) or "none yet"
            return json_error(404, f"unknown tag {tag!r} in run {run!r}; its tags: {tags}")
        head = dumps({"run": run, "tag": tag, "seq": seq})
        body = b"".join((head[:-1], b',"points":', rows_json(batch), b"}"))  # NaN as "NaN" (encoding.py)
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def series(self, request: web.Request) -> web.StreamResponse:
        return await handle_series(request, self.state.hub, self.state.config)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(token=self.state.config.token is not None))

    async def metrics(self, request: web.Request) -> web.Response:
        if self.registry is None:
            self.registry = make_registry(self.metric_sources)
        body, content_type = render(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of ``static/`` listed when the app was made: no path is ever joined from the URL."""
        name = request.match_info["name"]
        found = self.static_files.response(request, name)
        if found is None:
            return json_error(404, f"no static file {name!r}; the dashboard is at /")
        return found

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The dashboard with /health, /api/runs and, when small, the top card's series embedded
        (``indexpage.py``): no round trip before the first chart. Behind the token like /api/runs
        (``security.py``)."""
        template = self.static_files.text("index.html")
        if template is None:
            return web.Response(text=PLACEHOLDER_HTML, content_type="text/html")
        hub = self.state.hub
        hub.flush()  # `seq` covers exactly the runs, tags and points below (no await until they are cut)
        runs = hub.runs()
        first = first_tag(runs)
        card = first_card(hub, runs, first)  # the top card's series, when they are what the page would fetch
        boot = {"health": self.health_body(len(runs)), "runs": runs, "first": first}
        chunks = index_chunks(template, boot, hub.seq, card)
        headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
        if card is None:  # one piece, sent with its length
            return web.Response(body=b"".join(chunks), headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            for chunk in chunks:  # the page, then the series, encoded as they go
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413... and unexpected exceptions, as ``{"error": ...}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no route {request.path!r}; see /api/openapi.json for the API",
            405: f"method {request.method} is not allowed on {request.path!r}; use GET",
        }.get(exc.status, exc.text or exc.reason)
        return json_error(exc.status, message, headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except Exception:
        log.exception("unhandled error answering %s %s", request.method, redact(request.path_qs))
        return json_error(500, "internal error in lightning-stream; see the server log")


async def _no_referrer(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: a dashboard URL may hold ``?token=``; links out of it must not send it on."""
    response.headers.setdefault("Referrer-Policy", "no-referrer")


def create_app(state: AppState) -> web.Application:
    """The application for ``state``; start ``state.loop_lag`` yourself (the server owns the loop)."""
    install_log_redaction()  # no ?token= in any log line (logs.py)
    app = web.Application(
        middlewares=[json_errors, security_middleware(state.config)],
        client_max_size=64 * 1024,  # no route takes a body
    )
    sse = SSEStreams(state.hub, state.config)
    ws = WebSockets(state.hub, state.config)
    routes = _Routes(state, sse, ws)
    app[STATE] = state
    app[SSE] = sse
    app[WS] = ws
    app.router.add_get("/health", routes.health)
    app.router.add_get("/api/runs", routes.runs)
    app.router.add_get("/api/scalars", routes.scalars)
    app.router.add_get("/api/series", routes.series)
    app.router.add_get("/api/openapi.json", routes.openapi)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/stream", sse.handle, allow_head=False)  # a HEAD would hold a subscription open
    app.router.add_get("/ws", ws.handle, allow_head=False)
    app.router.add_get("/", routes.index)
    app.router.add_get("/static/{name:.+}", routes.static)  # aiohttp's add_static 404s with an empty body
    app.on_response_prepare.append(_no_referrer)

    async def on_shutdown(app: web.Application) -> None:
        await sse.close_all()
        await ws.close_all()

    app.on_shutdown.append(on_shutdown)
    return app

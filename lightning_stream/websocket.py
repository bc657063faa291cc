"""``GET /ws``: the WebSocket protocol (JSON text messages).

Client → server::

    {"op": "subscribe", "run": GLOB?, "tag": GLOB?, "since": SEQ?, "format": "points"|"columns"?}
                                                                      replaces any earlier subscription
    {"op": "unsubscribe"}
    {"op": "ping"}

Server → client::

    {"type": "subscribed", "run": GLOB, "tag": GLOB, "seq": N, "format": F}   seq = hub seq at subscribe time
    {"type": "scalars", "seq": N, "points": [{"run","tag","step","wall_time","value"}, ...]}
    {"type": "scalars", "seq": N, "series": [{"run","tag","steps","wall_times","values"}, ...]}  format=columns
    {"type": "status", "seq": N, "run": R, "state": S, ...}
    {"type": "reset", "seq": N, "reason": "..."}                       re-read REST, then keep going
    {"type": "unsubscribed"} / {"type": "pong", "seq": N}
    {"type": "error", "message": "..."}                                the connection stays usable

Frames larger than ``config.ws_max_msg_size`` close the connection with 1009
(aiohttp's rule: the frame cannot be skipped safely). Protocol pings every
``config.keepalive_s`` detect dead peers. Per-message compression is off: it
would cost CPU per client per message, which is what fan-out cannot afford. For the same reason a
client that keeps up gets whole frames (header built once per frame for all clients) written from
inside the hub's broadcast (``direct.py``); ``send_frame`` is the path of a client that fell behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from lightning_stream.config import ServerConfig
from lightning_stream.direct import DirectSender, DirectStats, ws_text_frame
from lightning_stream.hub import Hub, HubClosed, Message, Subscription
from lightning_stream.params import BadRequest, parse_format, parse_glob, parse_seq
from lightning_stream.security import json_error
from lightning_stream.wire import FrameCache, ws_json

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0
OPS = ("subscribe", "unsubscribe", "ping")
MAX_DEPTH = 32  # a control message is a flat object; deeper text is refused before the parser sees it


def nesting_depth(text: str) -> int:
    """How deep ``[``/``{`` nest in ``text`` outside strings (json's C scanner recurses per level)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _ws_bytes(message: Message, sub: Subscription) -> bytes:
    text = ws_json(message, sub)  # {"type": kind, "seq": N, ...payload}
    return b"" if text is None else text.encode()


def _error(message: str) -> str:
    return json.dumps({"type": "error", "message": message})


class _Connection:
    """One WebSocket client: a reader loop (this task) and a pump task per subscription."""

    def __init__(
        self, ws: web.WebSocketResponse, hub: Hub, owner: WebSockets, transport: asyncio.BaseTransport | None
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.hub = hub
        self.owner = owner
        self.sub: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None
        self.direct: DirectSender | None = None

    async def on_text(self, text: str) -> None:
        # Depth first: json's C scanner recurses per level ("[" * 1000 raised RecursionError, which closed the
        # connection), and how it fails on deep or unterminated text differs between Python versions.
        if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
            await self.error(f'JSON nested too deeply: {text[:80]!r}; send a flat object, e.g. {{"op": "subscribe"}}')
            return
        try:
            request = json.loads(text)
        except (ValueError, RecursionError):
            await self.error(f'not JSON: {text[:80]!r}; send e.g. {{"op": "subscribe"}}')
            return
        if not isinstance(request, dict):
            await self.error(f"expected a JSON object with an 'op', got {type(request).__name__}")
            return
        op = request.get("op")
        try:
            if op == "subscribe":
                await self.subscribe(request)
            elif op == "unsubscribe":
                await self.unsubscribe()
                await self.ws.send_str('{"type":"unsubscribed"}')
            elif op == "ping":
                await self.ws.send_str(json.dumps({"type": "pong", "seq": self.hub.seq}))
            else:
                raise BadRequest(f"unknown op {op!r}; use one of {', '.join(OPS)}")
        except BadRequest as exc:
            await self.error(str(exc))

    async def error(self, message: str) -> None:
        self.owner.errors_sent += 1
        await self.ws.send_str(_error(message))

    async def subscribe(self, request: dict[str, Any]) -> None:
        unknown = set(request) - {"op", "run", "tag", "since", "format"}
        if unknown:
            raise BadRequest(f"unknown field(s) {sorted(unknown)!r} in subscribe; allowed: run, tag, since, format")
        run_glob = parse_glob(request.get("run"), "run")
        tag_glob = parse_glob(request.get("tag"), "tag")
        fmt = parse_format(request.get("format"))
        since = request.get("since")
        since_seq = None if since is None else parse_seq(since, "since")
        await self.unsubscribe()
        try:
            sub = self.hub.subscribe(run_glob, tag_glob, since=since_seq, format=fmt)
        except ValueError as exc:  # the hub's own argument checks
            raise BadRequest(str(exc)) from None
        self.sub = sub
        await self.ws.send_str(
            json.dumps({"type": "subscribed", "run": run_glob, "tag": tag_glob, "seq": self.hub.seq, "format": fmt})
        )
        self.pump = asyncio.get_running_loop().create_task(self._pump(sub))

    async def unsubscribe(self) -> None:
        sub, self.sub = self.sub, None
        pump, self.pump = self.pump, None
        if sub is not None:
            sub.close()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, sub: Subscription) -> None:
        """Park on the direct path (``direct.py``) while the client keeps up; ``send_frame`` otherwise."""
        ws = self.ws
        owner = self.owner
        transport = None if ws.compress else self.transport
        direct = self.direct = DirectSender(
            sub, transport, lambda m: owner.wire_frames.get(m, sub), owner.direct, usable=self.open
        )
        try:
            while True:
                message = direct.take()
                if message is None:
                    await direct.park(None)
                    continue
                data = owner.frames.get(message, sub)
                if data:
                    await ws.send_frame(data, WSMsgType.TEXT)  # bytes encoded once for all clients
                    owner.messages_sent += 1
        except (HubClosed, ConnectionError):
            pass
        finally:
            sub.close()

    def open(self) -> bool:
        """Whether data frames may still be sent (no close frame sent yet)."""
        return not self.ws.closed

    async def close(self) -> None:
        await self.unsubscribe()


class WebSockets:
    """The ``/ws`` route handler plus the live connections it must close on shutdown."""

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        self._hub = hub
        self._config = config
        self._connections: set[_Connection] = set()
        self._closing = False
        self.frames = FrameCache(_ws_bytes)
        # the same as whole WebSocket frames (header included), for the direct path
        self.wire_frames = FrameCache(lambda message, sub: ws_text_frame(self.frames.get(message, sub)))
        self.direct = DirectStats()
        self.messages_sent = 0
        self.errors_sent = 0

    @property
    def count(self) -> int:
        return len(self._connections)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            return json_error(503, "the server is shutting down; reconnect in a moment")
        ws = web.WebSocketResponse(
            heartbeat=self._config.keepalive_s,
            max_msg_size=self._config.ws_max_msg_size,
            compress=False,
            timeout=CLOSE_TIMEOUT_S,
        )
        ready = ws.can_prepare(request)
        if not ready.ok:
            return json_error(400, "this is a WebSocket endpoint; connect with a WebSocket client (Upgrade: websocket)")
        await ws.prepare(request)
        conn = _Connection(ws, self._hub, self, request.transport)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await conn.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await conn.error("binary frames are not understood; send JSON text")
                elif msg.type == WSMsgType.ERROR:
                    log.debug("websocket error from %s: %r", request.remote, ws.exception())
        except (ConnectionError, HubClosed):
            pass  # client gone, or the hub closed under us (shutdown): close the socket below
        finally:
            await conn.close()
            self._connections.discard(conn)
            if not ws.closed:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        return ws

    async def close_all(self) -> None:
        """Close every connection with 1001 GOING_AWAY (bounded wait for each peer's answer)."""
        self._closing = True
        conns = list(self._connections)
        for conn in conns:
            await conn.close()
        await asyncio.gather(
            *(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for conn in conns),
            return_exceptions=True,
        )
        self.frames.clear()
        self.wire_frames.clear()

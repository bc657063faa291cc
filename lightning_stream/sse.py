"""``GET /stream``: Server-Sent Events from the hub, with resume by ``Last-Event-ID``.

Wire format (asserted byte for byte in the tests), lines end with ``\\n``::

    retry: 2000\\n\\n                         once, right after the headers
    id: 7\\nevent: scalars\\ndata: {...}\\n\\n    one frame per hub message (scalars|status|reset)
    : keep-alive\\n\\n                       after ``config.keepalive_s`` without a frame

``id:`` is the hub's global sequence number, so a browser's automatic
reconnect (``Last-Event-ID`` header) or ``?last_event_id=N`` resumes exactly
after the last frame received; the hub answers with the missed batches or an
``event: reset`` when they are no longer in its replay buffer.

``?format=columns`` makes each ``scalars`` frame's data ``{"series": [{"run", "tag", "steps",
"wall_times", "values"}, ...]}`` (one entry per series touched) instead of ``{"points": [...]}``;
ids, resume and resets are the same.

A client that keeps up is written to from inside the hub's broadcast (``direct.py``), the frame
already in the connection's framing (HTTP/1.1 chunks, which this route turns on itself, or the
bare stream of HTTP/1.0); its pump task only runs for a client that fell behind, for keep-alives
and for the liveness check.

Why not ``aiohttp-sse`` (3.0)? Its ``send()`` formats and line-splits every
event per client and runs a ping task per connection; here the payload JSON is
built once per filter by the hub and a client's frames go out in one write,
several messages coalesced when the client is behind. Shutdown is also ours:
``close_all()`` ends every stream (and aborts stalled ones) so that
``runner.cleanup()`` returns promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import HttpVersion11, hdrs, web

from lightning_stream.config import ServerConfig
from lightning_stream.direct import DirectSender, DirectStats, chunked
from lightning_stream.hub import Hub, HubClosed, Message, Subscription
from lightning_stream.params import BadRequest, parse_format, parse_glob, parse_seq
from lightning_stream.security import cors_headers_for, json_error
from lightning_stream.wire import FrameCache, payload_json

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _timeout(delay: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        handle = asyncio.get_running_loop().call_later(delay, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            if handle.cancelled() or handle.when() > asyncio.get_running_loop().time():
                raise
            raise TimeoutError from None
        finally:
            handle.cancel()


log = logging.getLogger(__name__)

RETRY_MS = 2000
KEEPALIVE = b": keep-alive\n\n"
#: how often an idle stream checks that its client is still connected
LIVENESS_CHECK_S = 1.0
#: coalesce ready messages into one write up to this size (bounds what one stream buffers)
COALESCE_BYTES = 256 * 1024
#: largest single write: a big frame (up to ~1 MB) goes out in slices, so a slow client never
#: holds a private copy of more than about one slice plus aiohttp's 64 KiB high-water mark
WRITE_SLICE = 64 * 1024
SHUTDOWN_GRACE_S = 1.0


def sse_frame(kind: str, seq: int, payload: str) -> bytes:
    """One SSE event; a payload with newlines (never from the hub's JSON) gets one ``data:`` per line."""
    if "\n" in payload or "\r" in payload:
        data = "".join(f"data: {line}\n" for line in payload.splitlines())
        return f"id: {seq}\nevent: {kind}\n{data}\n".encode()
    return f"id: {seq}\nevent: {kind}\ndata: {payload}\n\n".encode()


def resume_point(request: web.Request) -> int | None:
    """The seq the client has seen: the ``Last-Event-ID`` header (set by the browser on
    reconnect, so fresher) wins over ``?last_event_id=`` (fixed in the URL)."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        return parse_seq(header.strip(), "Last-Event-ID header")
    query = request.query.get("last_event_id")
    if query is not None:
        return parse_seq(query, "last_event_id")
    return None


def _sse_bytes(message: Message, sub: Subscription) -> bytes:
    payload = payload_json(message, sub)
    return b"" if payload is None else sse_frame(message.kind, message.seq, payload)


@dataclass(eq=False)
class _Stream:
    request: web.Request
    sub: Subscription
    task: asyncio.Task[object] | None
    direct: DirectSender | None = None


class SSEStreams:
    """The ``/stream`` route handler plus the live streams it must end on shutdown."""

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        self._hub = hub
        self._config = config
        self._streams: set[_Stream] = set()
        self._closing = False
        self._frames = FrameCache(_sse_bytes)
        # the same frames as HTTP/1.1 chunks, for the direct path (it writes to the socket itself)
        self._chunked = FrameCache(lambda message, sub: chunked(self._frames.get(message, sub)))
        self.direct = DirectStats()
        self.bytes_sent = 0  # by the pumps; the direct path counts in self.direct.bytes

    @property
    def count(self) -> int:
        return len(self._streams)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            return json_error(503, "the server is shutting down; reconnect in a moment")
        try:
            run_glob = parse_glob(request.query.get("run"), "run")
            tag_glob = parse_glob(request.query.get("tag"), "tag")
            fmt = parse_format(request.query.get("format"))
            since = resume_point(request)
        except BadRequest as exc:
            return json_error(400, str(exc))

        try:
            sub = self._hub.subscribe(run_glob, tag_glob, since=since, format=fmt)
        except HubClosed:
            return json_error(503, "the server is shutting down; reconnect in a moment")
        except ValueError as exc:  # the hub's own argument checks
            return json_error(400, str(exc))
        stream = _Stream(request, sub, asyncio.current_task())
        self._streams.add(stream)
        try:
            response = web.StreamResponse(
                headers={
                    hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
                    hdrs.CACHE_CONTROL: "no-cache",
                    "X-Accel-Buffering": "no",
                    **cors_headers_for(request, self._config),
                }
            )
            if request.version >= HttpVersion11:
                # what aiohttp would pick anyway, chosen here so the direct path knows the framing to write
                response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await self._pump(stream, response)
        except (ConnectionError, HubClosed):
            pass  # client went away, or the server is shutting down
        finally:
            sub.close()
            self._streams.discard(stream)
        return response

    async def _pump(self, stream: _Stream, response: web.StreamResponse) -> None:
        """Park on the direct path (``direct.py``) while the client keeps up; write with flow control otherwise."""
        sub = stream.sub
        keepalive_s = self._config.keepalive_s
        wait_s = min(keepalive_s, LIVENESS_CHECK_S)
        frames = self._chunked if response.chunked else self._frames
        # a compressed response (not ours, but a middleware could ask) takes the pump's path every time
        transport = None if response.compression else stream.request.transport
        direct = DirectSender(sub, transport, lambda m: frames.get(m, sub), self.direct, max_frame=WRITE_SLICE)
        stream.direct = direct
        while True:
            message = direct.take()
            if message is None:
                if await direct.park(wait_s):
                    continue  # the client fell behind (or the subscription closed): write below
                transport = stream.request.transport
                if transport is None or transport.is_closing():
                    return
                if time.monotonic() - direct.last_write >= keepalive_s:
                    await response.write(KEEPALIVE)
                    direct.last_write = time.monotonic()
                continue
            chunks = [self._encode(message, sub)]
            size = len(chunks[0])
            while size < COALESCE_BYTES:  # a client that is behind gets what is ready in one write
                more = direct.take()
                if more is None:
                    break
                chunks.append(self._encode(more, sub))
                size += len(chunks[-1])
            if size <= WRITE_SLICE:  # small frames: one write (the join is a small private copy)
                if size:
                    await response.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            else:  # big ones: slices of the shared frames, so this client never holds a private copy
                for chunk in chunks:
                    view = memoryview(chunk)
                    for offset in range(0, len(chunk), WRITE_SLICE):
                        await response.write(view[offset : offset + WRITE_SLICE])
            if size:
                direct.last_write = time.monotonic()
                self.bytes_sent += size

    def _encode(self, message: Message, sub: Subscription) -> bytes:
        return self._frames.get(message, sub)

    async def close_all(self) -> None:
        """End every stream: subscriptions close (handlers return), stalled writers are aborted."""
        self._closing = True
        streams = list(self._streams)
        for stream in streams:
            stream.sub.close()
        tasks = {s.task for s in streams if s.task is not None and not s.task.done()}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for stream in streams:
                if stream.task in pending:
                    transport = stream.request.transport
                    if transport is not None:
                        transport.abort()  # a client that stopped reading: the write would never finish
                    stream.task.cancel()
        self._frames.clear()
        self._chunked.clear()

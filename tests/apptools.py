"""Helpers for the app tests: a real ``create_app`` on a loopback port, and real SSE clients.

``running_app()`` starts the application exactly as a server does (a ``Hub``, a
``LoopLagMonitor``, ``web.AppRunner`` + ``TCPSite`` on 127.0.0.1, port 0) on the
test's own loop, so tests can reach into ``hub`` directly (``ingest``,
``publish_status``) and talk to the port with real clients. ``RawSSE`` reads the
bytes of ``/stream`` from a plain socket (decoding HTTP chunked framing only),
so tests can assert the exact SSE wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from lightning_stream.app import AppState, create_app
from lightning_stream.config import ServerConfig
from lightning_stream.hub import Hub
from lightning_stream.looplag import LoopLagMonitor
from lightning_stream.scalars import ScalarBatch

TIMEOUT = aiohttp.ClientTimeout(total=20)


@dataclass
class RunningApp:
    app: web.Application
    hub: Hub
    state: AppState
    runner: web.AppRunner
    host: str
    port: int
    config: ServerConfig

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def running_app(config: ServerConfig | None = None, **overrides: Any) -> AsyncIterator[RunningApp]:
    """``create_app`` served on 127.0.0.1:<free port> until the block ends (then cleaned up)."""
    config = (config or ServerConfig(registry=False, watchdog_interval_s=0)).replace(**overrides)
    hub = Hub(config)
    state = AppState(hub=hub, config=config, loop_lag=LoopLagMonitor(interval_s=0.05))
    state.loop_lag.start()
    app = create_app(state)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    running = RunningApp(app, hub, state, runner, "127.0.0.1", port, config)
    try:
        yield running
    finally:
        await runner.cleanup()
        await hub.close()
        await state.loop_lag.stop()


def batch(run: str, tag: str, steps: Iterable[int], value: float | None = None) -> ScalarBatch:
    """A ``ScalarBatch`` with value = step / 10 (or ``value``), wall_time = 1000 + step."""
    s = list(steps)
    return ScalarBatch(
        run,
        tag,
        array("q", s),
        array("d", [1000.0 + x for x in s]),
        array("d", [x / 10 if value is None else value for x in s]),
    )


def ingest(hub: Hub, *batches: ScalarBatch) -> None:
    for b in batches:
        hub.note_run(b.run, None)
    hub.ingest(list(batches))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (for server-side state that has no event to await)."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - nothing to await on; tests only
            await asyncio.sleep(0.005)

    # asyncio.wait_for, not asyncio.timeout (3.11+): the torch-free suite runs on 3.10 too (noxfile.py).
    await asyncio.wait_for(poll(), timeout)


async def wait_for_seq(hub: Hub, seq: int, timeout: float = 10.0) -> None:
    """Wait until the hub has handed out ``seq`` (it coalesces per tick)."""
    await until(lambda: hub.seq >= seq, timeout)


@dataclass
class SSEEvent:
    id: int | None
    event: str
    data: Any


@dataclass
class SSEReader:
    """Parses ``text/event-stream`` from an aiohttp client response, keeping comments and retry."""

    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    async def next_event(self, timeout: float = 10.0) -> SSEEvent:
        return await asyncio.wait_for(self._next_event(), timeout)

    async def _next_event(self) -> SSEEvent:
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise ConnectionError("SSE stream ended")
            line = raw.decode().rstrip("\n").rstrip("\r")
            if not line:
                if data:
                    return SSEEvent(
                        int(fields["id"]) if "id" in fields else None,
                        fields.get("event", "message"),
                        json.loads("\n".join(data)),
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    async def points(self, count: int, timeout: float = 10.0) -> tuple[list[tuple[str, str, int]], int]:
        """Read scalars events until ``count`` points arrived; returns (run, tag, step) and last id."""
        got: list[tuple[str, str, int]] = []

        async def read() -> int:
            last = 0
            while len(got) < count:
                event = await self._next_event()
                assert event.event == "scalars", event
                assert event.id is not None
                last = event.id
                got.extend((p["run"], p["tag"], p["step"]) for p in event.data["points"])
            return last

        last = await asyncio.wait_for(read(), timeout)
        return got, last


class RawSSE:
    """``GET /stream`` over a plain TCP socket: exact bytes of the event stream (chunked framing removed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head
        self.buffer = b""

    @classmethod
    async def open(cls, app: RunningApp, path: str = "/stream", headers: dict[str, str] | None = None) -> RawSSE:
        reader, writer = await asyncio.open_connection(app.host, app.port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {app.host_header}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return cls(reader, writer, head)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    async def _chunk(self) -> bytes:
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        body = await self.reader.readexactly(size + 2)
        return body[:-2]

    async def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Bytes up to and including the first ``marker`` (the rest stays buffered)."""

        async def fill() -> None:
            while marker not in self.buffer:
                chunk = await self._chunk()
                if not chunk:
                    raise ConnectionError(f"stream ended before {marker!r}; got {self.buffer!r}")
                self.buffer += chunk

        await asyncio.wait_for(fill(), timeout)
        end = self.buffer.index(marker) + len(marker)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def read_until(sock: socket.socket, marker: bytes, limit_s: float = 20.0) -> bytes:
    """Blocking read of a raw socket (run it in a thread) until ``marker`` shows up, the peer closes, or ``limit_s``."""
    deadline = time.monotonic() + limit_s
    sock.settimeout(limit_s)
    data = b""
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def stalled_sse_client(app: RunningApp) -> socket.socket:
    """A raw ``GET /stream`` that never reads: with a 4 KiB receive window, its socket soon fills up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((app.host, app.port))
    sock.sendall(f"GET /stream HTTP/1.1\r\nHost: {app.host_header}\r\n\r\n".encode())
    return sock

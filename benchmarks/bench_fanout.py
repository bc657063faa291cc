"""Fan-out: N SSE + M WebSocket clients, a publisher at R points/s, one server.

Three kinds of process, so the server's CPU figure is its own:

* the server: ``create_app`` on a loopback port (as ``StreamServer`` runs it), plus
  a publisher task calling ``hub.ingest`` every 10 ms with ``R/100`` points spread
  over ``--series`` tags; each point's ``value`` is its publish time;
* ``--procs`` client processes sharing the N + M connections: SSE over a raw socket
  (HTTP/1.0, so the bytes are the event stream) and WebSocket, each connection an
  ``asyncio.Protocol`` that parses the framing in ``data_received`` (``--clients protocol``,
  the default: no task per client, so the clients' CPU is mostly reading and checking), or
  asyncio streams for SSE and aiohttp's WebSocket client (``--clients streams``, heavier);
* this orchestrator: starts them, says GO once every client is connected,
  collects the figures.

Per client: points received (counted from the bytes: ``"step":`` markers, or with
``--format columns`` the numbers in each ``"steps":[...]``), resets seen. A client that saw no reset must have received every published point, so
``lost`` = published - received over those clients (must be 0); with columns each frame's
id must also be above the previous one (``out of order``, must be 0). Latency =
receive time - publish time of the OLDEST point in each socket read (the worst
point of that read), over all clients; p50/p99 reported. Server CPU (user+sys,
as % of one core) and peak RSS are measured over the publish window plus drain.

    python benchmarks/bench_fanout.py                       # 500 SSE + 500 WS, 10,000 points/s, 10 s
    python benchmarks/bench_fanout.py --quick               # 20 + 20 clients, 2,000 points/s, 3 s
    python benchmarks/bench_fanout.py --sse 100 --ws 100 --rate 50000 --tick 0.05
    python benchmarks/bench_fanout.py --format columns     # the columnar frames (format=columns)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from array import array
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = b'"step":'
WALL = b'"wall_time":'
STEPS = b'"steps":['
WALLS = b'"wall_times":['


# ---------------------------------------------------------------------------------------------- server


def runqueue_wait_s() -> float:
    """Seconds this process's main thread spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere).

    On a shared machine this tells "the code is slow" apart from "the code was not scheduled".
    """
    try:
        with open(f"/proc/self/task/{os.getpid()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def serve(args: argparse.Namespace) -> None:
    import psutil
    from aiohttp import web

    from lightning_stream.app import AppState, create_app
    from lightning_stream.config import ServerConfig
    from lightning_stream.hub import Hub
    from lightning_stream.looplag import LoopLagMonitor
    from lightning_stream.scalars import ScalarBatch

    config = ServerConfig(registry=False, watchdog_interval_s=0, tick_s=args.tick, subscriber_queue=args.queue)
    hub = Hub(config)
    state = AppState(hub=hub, config=config, loop_lag=LoopLagMonitor(interval_s=0.05, window=20))
    state.loop_lag.start()
    runner = web.AppRunner(create_app(state), handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    assert (await reader.readline()).strip() == b"GO"

    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    wait0 = runqueue_wait_s()
    t0 = time.monotonic()
    rss_peak = proc.memory_info().rss
    hub.note_run("bench", None)
    tags = [f"metric/{i}" for i in range(args.series)]
    published = 0
    step = 0
    end = t0 + args.duration
    next_tick = t0
    lag_max = 0.0
    ticks = 0
    while (now := time.monotonic()) < end:
        ticks += 1
        # offered load follows the clock: a late tick publishes what is due (a burst), as a real run would
        n = int(args.rate * (now - t0)) - published
        if n > 0:
            wall = time.time()
            batches = []
            for i, tag in enumerate(tags):
                k = n // len(tags) + (1 if i < n % len(tags) else 0)
                if k:
                    steps = array("q", range(step, step + k))
                    batches.append(ScalarBatch("bench", tag, steps, array("d", [wall] * k), array("d", [wall] * k)))
            step += -(-n // len(tags))
            hub.ingest(batches)
            published += n
        if ticks % 20 == 0:
            rss_peak = max(rss_peak, proc.memory_info().rss)
        lag_max = max(lag_max, state.loop_lag.lag_ms)
        next_tick += 0.01
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    publish_s = time.monotonic() - t0
    cpu_pub = proc.cpu_times()
    hub.publish_status("bench", "finished", published=published)
    # drain: until the orchestrator says STOP (all clients reported)
    stop = asyncio.ensure_future(reader.readline())
    while not stop.done():
        rss_peak = max(rss_peak, proc.memory_info().rss)
        lag_max = max(lag_max, state.loop_lag.lag_ms)
        await asyncio.wait([stop], timeout=0.2)
    cpu1 = proc.cpu_times()
    wait1 = runqueue_wait_s()
    busy_s = time.monotonic() - t0
    stats = hub.stats()
    result = {
        "published": published,
        "publish_s": publish_s,
        "busy_s": busy_s,
        "cpu_pct": 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / busy_s,
        "cpu_pct_publish": 100 * ((cpu_pub.user - cpu0.user) + (cpu_pub.system - cpu0.system)) / publish_s,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "runqueue_wait_pct": 100 * (wait1 - wait0) / busy_s,
        "rss_mb": rss_peak / 2**20,
        "loop_lag_max_ms": max(lag_max, state.loop_lag.max_lag_ms),
        "resets": stats["resets"],
        "batches_out": stats["batches_out"],
    }
    print("RESULT " + json.dumps(result), flush=True)
    await runner.cleanup()
    await hub.close()
    await state.loop_lag.stop()


# ---------------------------------------------------------------------------------------------- clients


class Tally:
    """What one client saw, counted from raw bytes without copying them.

    Markers are counted in each read plus in the seam ``previous tail + head of this read``
    (minus what lies wholly inside either side), so a marker split across reads counts once.
    """

    EDGE = 32  # longer than any marker

    def __init__(self) -> None:
        self.points = 0
        self.resets = 0
        self.done = False
        self.error: str | None = None  # what broke this client (protocol clients)
        self.edge = b""
        self.latencies: list[float] = []

    def _count(self, data: bytes, head: bytes, seam: bytes, marker: bytes) -> int:
        return data.count(marker) + seam.count(marker) - self.edge.count(marker) - head.count(marker)

    def feed(self, data: bytes, now: float) -> None:
        head = data[: self.EDGE]
        seam = self.edge + head
        self.points += self._count(data, head, seam, STEP)
        if b"reset" in data or b"reset" in seam:
            self.resets += self._count(data, head, seam, b"event: reset")
            self.resets += self._count(data, head, seam, b'"type":"reset"')
        if self._count(data, head, seam, b"event: status") + self._count(data, head, seam, b'"type":"status"'):
            self.done = True
        i = data.find(WALL)  # the oldest point of this read
        if i >= 0:
            j = k = i + len(WALL)
            while k < len(data) and data[k] in b"0123456789.e+-":
                k += 1
            if k < len(data):
                self.latencies.append(now - float(data[j:k]))
        self.edge = data[-self.EDGE :] if len(data) >= self.EDGE else (self.edge + data)[-self.EDGE :]


class ColumnsTally(Tally):
    """The same for ``format=columns``: points = numbers in each ``"steps":[...]`` of complete frames.

    SSE bytes are cut at the last frame end (``\n\n``) and the rest kept for the next read; a
    WebSocket message is always whole. Each scalars frame's id (SSE ``id:``, WS ``"seq":``) must be
    above the one before: ``out_of_order`` counts those that are not (a repeated or reordered frame).

    Reading ~0.5 GB/s of frames on 2 cores is the clients' main cost, so a frame is walked with
    one-byte searches (``memchr``: ``\n`` for an SSE frame's end, ``[`` and ``]`` for its arrays),
    which run ~50 x faster than a search for a longer marker; a ``steps`` array is told by the
    8 bytes before its ``[`` (the benchmark's run and tag names hold no brackets).
    """

    def __init__(self, sse: bool) -> None:
        super().__init__()
        self.sse = sse
        self.rest = b""
        self.first_wall: float | None = None
        self.last_id = -1
        self.out_of_order = 0

    def feed(self, data: bytes, now: float) -> None:
        if not self.sse:
            self.frame(data, 0, len(data))
        else:
            if self.rest:
                data = self.rest + data
            n = len(data)
            cut = n if data.endswith(b"\n\n") else data.rfind(b"\n\n") + 2
            if cut < 2:  # no whole frame yet
                self.rest = data
                return
            self.rest = data[cut:] if cut < n else b""
            p = 0
            while p < cut:
                if data.startswith(b"id: ", p):  # id, event, then one data line (the JSON holds no newline)
                    end = data.find(b"\n", data.find(b"\ndata: ", p) + 7)
                    self.frame(data, p, end)
                    p = end + 2
                else:  # retry: or a keep-alive comment
                    p = data.find(b"\n\n", p) + 2
        self.read_done(now)

    def read_done(self, now: float) -> None:
        """End of one socket read: its latency is that of its oldest point."""
        if self.first_wall is not None:
            self.latencies.append(now - self.first_wall)
            self.first_wall = None

    def frame(self, data: bytes, start: int, end: int) -> None:
        """Count one whole frame in ``data[start:end]`` (SSE from its ``id:`` line, or a WS message)."""
        head = data[start : start + 48]
        if b"scalars" not in head:
            if b"reset" in head:
                self.resets += 1
            elif b"status" in head:
                self.done = True
            return
        # the frame's id: "id: N\n" (SSE) or "seq":N, (WS), both in the head
        i = head.find(b"id: ") + 4 if self.sse else head.find(b'"seq":') + 6
        j = i
        while head[j] in b"0123456789":
            j += 1
        frame_id = int(head[i:j])
        if frame_id <= self.last_id:
            self.out_of_order += 1
        self.last_id = frame_id
        want_wall = self.first_wall is None  # the oldest point of this read
        i = data.index(b"[", start, end)  # "series":[
        while True:
            i = data.find(b"[", i + 1, end)
            if i < 0:
                break
            close = data.index(b"]", i, end)
            if data[i - 8 : i] == b'"steps":':
                if close > i + 1:
                    self.points += data.count(b",", i, close) + 1
            elif want_wall and data[i - 13 : i] == b'"wall_times":':
                comma = data.find(b",", i, close)
                self.first_wall = float(data[i + 1 : close if comma < 0 else comma])
                want_wall = False
            i = close


async def sse_client(port: int, tally: Tally, ready: asyncio.Event, deadline: float, fmt: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    query = "?format=columns" if fmt == "columns" else ""
    writer.write(f"GET /stream{query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    ready.set()
    try:
        while not tally.done and time.time() < deadline:
            data = await asyncio.wait_for(reader.read(1 << 18), max(0.1, deadline - time.time()))
            if not data:
                break
            tally.feed(data, time.time())
    except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
        pass
    finally:
        writer.close()


async def ws_client(session: Any, port: int, tally: Tally, ready: asyncio.Event, deadline: float, fmt: str) -> None:
    import aiohttp

    url = f"http://127.0.0.1:{port}/ws"
    async with session.ws_connect(url, compress=0, max_msg_size=0, decode_text=False) as ws:
        await ws.send_str(f'{{"op":"subscribe","format":"{fmt}"}}')
        msg = await ws.receive()
        assert b'"subscribed"' in msg.data, msg
        ready.set()
        while not tally.done and time.time() < deadline:
            try:
                msg = await ws.receive(timeout=max(0.1, deadline - time.time()))
            except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            tally.feed(msg.data, time.time())  # bytes: decode_text=False


class SSEProtocol(asyncio.Protocol):
    """``GET /stream`` (HTTP/1.0, so the body is the bare event stream) read straight from ``data_received``.

    No task and no StreamReader per connection: each read goes to the tally as it arrives, so the
    client processes spend their CPU on reading and checking frames, not on asyncio's machinery.
    """

    def __init__(self, port: int, fmt: str, tally: Tally, ready: asyncio.Event, closed: asyncio.Future[None]) -> None:
        self.request = f"GET /stream{'?format=columns' if fmt == 'columns' else ''} HTTP/1.0\r\n"
        self.request += f"Host: 127.0.0.1:{port}\r\n\r\n"
        self.tally = tally
        self.ready = ready
        self.closed = closed
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request.encode())

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception as exc:  # counted as a client error, never silently as "unfinished"
            self.tally.error = repr(exc)
            if self.transport is not None:
                self.transport.abort()

    def _received(self, data: bytes) -> None:
        if not self.ready.is_set():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            assert b" 200 " in self.head.split(b"\r\n", 1)[0], self.head
            data, self.head = self.head[end + 4 :], b""
            self.ready.set()
        if data:
            self.tally.feed(data, time.time())
        if self.tally.done and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455: clients mask), for the few small frames the client sends."""
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WSProtocol(SSEProtocol):
    """``GET /ws``: the upgrade, one subscribe, then server frames parsed from ``data_received``.

    Every frame header is parsed (server frames are not masked); text frames go to the tally whole,
    pings are answered, a close frame ends the connection.
    """

    def __init__(self, port: int, fmt: str, tally: Tally, ready: asyncio.Event, closed: asyncio.Future[None]) -> None:
        super().__init__(port, fmt, tally, ready, closed)
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.subscribe = f'{{"op":"subscribe","format":"{fmt}"}}'.encode()
        self.upgraded = False
        self.buffer = b""
        self.columns = isinstance(tally, ColumnsTally)

    def _received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            assert b" 101 " in self.head.split(b"\r\n", 1)[0], self.head
            data, self.head = self.head[end + 4 :], b""
            self.upgraded = True
            self.transport.write(_masked(0x1, self.subscribe))
        buf = self.buffer + data if self.buffer else data
        n = len(buf)
        p = 0
        now = time.time()
        tally = self.tally
        while n - p >= 2:
            opcode = buf[p] & 0x0F
            length = buf[p + 1] & 0x7F
            head = 2
            if length == 126:
                if n - p < 4:
                    break
                length = int.from_bytes(buf[p + 2 : p + 4], "big")
                head = 4
            elif length == 127:
                if n - p < 10:
                    break
                length = int.from_bytes(buf[p + 2 : p + 10], "big")
                head = 10
            start = p + head
            end = start + length
            if end > n:
                break
            if opcode == 0x1:
                if not self.ready.is_set():
                    assert b'"subscribed"' in buf[start:end], buf[start:end]
                    self.ready.set()
                elif self.columns:
                    tally.frame(buf, start, end)  # type: ignore[attr-defined]
                else:
                    tally.feed(buf[start:end], now)
            elif opcode == 0x9:  # ping: pong with the same payload
                self.transport.write(_masked(0xA, buf[start:end]))
            elif opcode == 0x8:
                tally.done = True
            p = end
        self.buffer = buf[p:] if p < n else b""
        if self.columns:
            tally.read_done(now)  # type: ignore[attr-defined]
        if tally.done:
            self.transport.write(_masked(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def connect_protocol_clients(
    args: argparse.Namespace, sse: list[Tally], ws: list[Tally], readies: list[asyncio.Event]
) -> tuple[list[asyncio.Future[None]], list[asyncio.BaseTransport]]:
    """Every connection as an ``asyncio.Protocol`` (no task per client), all subscribed when this returns."""
    loop = asyncio.get_running_loop()
    closed: list[asyncio.Future[None]] = []
    transports: list[asyncio.BaseTransport] = []
    kinds: list[tuple[type[SSEProtocol], Tally]] = [(SSEProtocol, t) for t in sse] + [(WSProtocol, t) for t in ws]
    for i, (kind, tally) in enumerate(kinds):
        done: asyncio.Future[None] = loop.create_future()
        closed.append(done)
        transport, _ = await loop.create_connection(
            lambda kind=kind, tally=tally, ready=readies[i], done=done: kind(
                args.port, args.format, tally, ready, done
            ),
            "127.0.0.1",
            args.port,
        )
        transports.append(transport)
        if i % 50 == 49:
            await asyncio.sleep(0.01)  # do not flood the listen backlog
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    return closed, transports


async def clients(args: argparse.Namespace) -> None:
    import aiohttp
    import psutil

    from lightning_stream.looplag import LoopLagMonitor

    deadline = time.time() + args.timeout
    lag = LoopLagMonitor(interval_s=0.05, window=1)
    columns = args.format == "columns"
    sse = [ColumnsTally(sse=True) if columns else Tally() for _ in range(args.sse)]
    ws = [ColumnsTally(sse=False) if columns else Tally() for _ in range(args.ws)]
    readies = [asyncio.Event() for _ in range(args.sse + args.ws)]
    proc = psutil.Process()
    if args.clients == "protocol":
        closed, transports = await connect_protocol_clients(args, sse, ws, readies)
        print("READY", flush=True)
        lag.start()
        cpu0, t0, wait0 = proc.cpu_times(), time.monotonic(), runqueue_wait_s()
        await asyncio.wait(closed, timeout=max(0.1, deadline - time.time()))
        cpu1, t1, wait1 = proc.cpu_times(), time.monotonic(), runqueue_wait_s()
        await lag.stop()
        for transport in transports:
            transport.close()
        results: list[Any] = []
    else:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = []
            for i, t in enumerate(sse):
                tasks.append(asyncio.ensure_future(sse_client(args.port, t, readies[i], deadline, args.format)))
                if i % 50 == 49:
                    await asyncio.sleep(0.01)  # do not flood the listen backlog
            for i, t in enumerate(ws):
                tasks.append(
                    asyncio.ensure_future(
                        ws_client(session, args.port, t, readies[args.sse + i], deadline, args.format)
                    )
                )
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
            print("READY", flush=True)
            lag.start()
            cpu0, t0, wait0 = proc.cpu_times(), time.monotonic(), runqueue_wait_s()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cpu1, t1, wait1 = proc.cpu_times(), time.monotonic(), runqueue_wait_s()
            await lag.stop()
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    errors += [t.error for t in sse + ws if t.error is not None]
    out = {
        "sse": [(t.points, t.resets, t.done) for t in sse],
        "ws": [(t.points, t.resets, t.done) for t in ws],
        "out_of_order": sum(getattr(t, "out_of_order", 0) for t in sse + ws),
        "latencies": [x for t in sse + ws for x in t.latencies],
        "errors": errors[:5],
        "n_errors": len(errors),
        "cpu_pct": 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (t1 - t0),
        "loop_lag_max_ms": lag.max_lag_ms,
        "runqueue_wait_pct": 100 * (wait1 - wait0) / (t1 - t0),
    }
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------- orchestrator


def _spawn(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.args!r} ended before printing {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    server = _spawn(
        "_server",
        f"--tick={args.tick}",
        f"--queue={args.queue}",
        f"--rate={args.rate}",
        f"--duration={args.duration}",
        f"--series={args.series}",
        *([f"--profile={args.profile}"] if args.profile else []),
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        port = int(_line(server, "PORT "))
        timeout = args.duration + 60
        for n_sse, n_ws in zip(_split(args.sse, args.procs), _split(args.ws, args.procs), strict=True):
            procs.append(
                _spawn(
                    "_clients",
                    f"--port={port}",
                    f"--sse={n_sse}",
                    f"--ws={n_ws}",
                    f"--timeout={timeout}",
                    f"--format={args.format}",
                    f"--clients={args.clients}",
                )
            )
        for p in procs:
            _line(p, "READY")
        assert server.stdin is not None
        server.stdin.write("GO\n")
        server.stdin.flush()
        results = [json.loads(_line(p, "RESULT ")) for p in procs]
        server.stdin.write("STOP\n")
        server.stdin.flush()
        srv = json.loads(_line(server, "RESULT "))
    finally:
        for p in [*procs, server]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"warning: {p.args[2:4]} did not exit within 30 s; killed", file=sys.stderr)
                p.kill()
    published = srv["published"]
    rows = [r for res in results for r in res["sse"] + res["ws"]]
    kept_up = [r for r in rows if r[1] == 0 and r[2]]  # no reset, and saw the final status
    lost = sum(max(0, published - r[0]) for r in kept_up)
    extra = sum(max(0, r[0] - published) for r in rows)  # counted twice or miscounted: must be 0 too
    lat = sorted(x for res in results for x in res["latencies"])
    delivered = sum(r[0] for r in rows)
    return {
        "sse": args.sse,
        "ws": args.ws,
        "format": args.format,
        "rate": args.rate,
        "tick": args.tick,
        "published": published,
        "delivered_per_s": delivered / srv["busy_s"],
        "clients_kept_up": len(kept_up),
        "clients_reset": sum(1 for r in rows if r[1]),
        "clients_unfinished": sum(1 for r in rows if not r[2]),
        "lost": lost,
        "extra": extra,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
        "max_ms": 1000 * lat[-1] if lat else float("nan"),
        "server_cpu_pct": srv["cpu_pct"],
        "server_cpu_pct_publish": srv["cpu_pct_publish"],
        "server_runqueue_wait_pct": srv["runqueue_wait_pct"],
        "client_runqueue_wait_pct": [round(res["runqueue_wait_pct"]) for res in results],
        "server_us_per_point": 1e6 * srv["cpu_s"] / max(1, delivered),
        "busy_s": srv["busy_s"],
        "server_rss_mb": srv["rss_mb"],
        "loop_lag_max_ms": srv["loop_lag_max_ms"],
        "client_errors": sum(res["n_errors"] for res in results),
        "out_of_order": sum(res["out_of_order"] for res in results),
        "clients": args.clients,
        "client_cpu_pct": [round(res["cpu_pct"]) for res in results],
        "client_lag_max_ms": max(res["loop_lag_max_ms"] for res in results),
        "load_before": load_before[0],
        "load_after": os.getloadavg()[0],
    }


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("clients (SSE + WS)", f"{r['sse']} + {r['ws']}, format={r['format']}, {r['clients']} clients"),
        ("publish rate", f"{r['rate']:,} points/s (tick {r['tick'] * 1000:g} ms)"),
        ("points published", f"{r['published']:,}"),
        ("delivered", f"{r['delivered_per_s']:,.0f} points/s"),
        (
            "clients kept up / reset / still behind at the deadline",
            f"{r['clients_kept_up']} / {r['clients_reset']} / {r['clients_unfinished']}",
        ),
        (
            "lost (clients that kept up) / extra / frames out of order",
            f"{r['lost']:,} / {r['extra']:,} / {r['out_of_order']:,}",
        ),
        ("latency p50 / p99 / max", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} ms"),
        (
            "server CPU (publish / publish+drain)",
            f"{r['server_cpu_pct_publish']:.0f}% / {r['server_cpu_pct']:.0f}% of one core",
        ),
        (
            "time runnable but not scheduled: server / clients",
            f"{r['server_runqueue_wait_pct']:.0f}% / "
            + " + ".join(f"{c}%" for c in r["client_runqueue_wait_pct"])
            + " (CPU taken by other processes)",
        ),
        ("server CPU per delivered point", f"{r['server_us_per_point']:.2f} µs"),
        ("publish + drain time", f"{r['busy_s']:.1f} s"),
        ("server peak RSS", f"{r['server_rss_mb']:.0f} MB"),
        ("server loop lag max", f"{r['loop_lag_max_ms']:.0f} ms"),
        ("client errors", str(r["client_errors"])),
        ("client processes CPU", " + ".join(f"{c}%" for c in r["client_cpu_pct"]) + " of one core"),
        ("client loop lag max", f"{r['client_lag_max_ms']:.0f} ms (latency includes the clients' own backlog)"),
        ("load average before / after", f"{r['load_before']:.2f} / {r['load_after']:.2f} ({os.cpu_count()} cores)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "_server", "_clients"])
    parser.add_argument("--sse", type=int, default=500)
    parser.add_argument("--ws", type=int, default=500)
    parser.add_argument("--rate", type=int, default=10_000, help="points per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--series", type=int, default=10, help="tags the points are spread over")
    parser.add_argument("--tick", type=float, default=0.005, help="hub coalescing tick, seconds (ServerConfig.tick_s)")
    parser.add_argument("--queue", type=int, default=512, help="ServerConfig.subscriber_queue")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--format", choices=["points", "columns"], default="points", help="frame form the clients ask for"
    )
    parser.add_argument(
        "--clients",
        choices=["protocol", "streams"],
        default="protocol",
        help="protocol: each connection an asyncio.Protocol parsing SSE/WebSocket framing in data_received (light); "
        "streams: asyncio streams for SSE and aiohttp's WebSocket client (the clients before 2026-12-03)",
    )
    parser.add_argument("--quick", action="store_true", help="20 + 20 clients, 2,000 points/s, 3 s")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the server process to PATH")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.role == "_server":
        if args.profile:
            import cProfile

            cProfile.runctx("asyncio.run(serve(args))", globals(), {"args": args}, args.profile)
        else:
            asyncio.run(serve(args))
        return 0
    if args.role == "_clients":
        asyncio.run(clients(args))
        return 0
    if args.quick:
        args.sse, args.ws, args.rate, args.duration, args.procs = 20, 20, 2000, 3.0, 1
    result = run(args)
    print(_table(result))
    if args.json:
        print(json.dumps(result))
    exact = result["lost"] == result["extra"] == result["out_of_order"] == result["client_errors"] == 0
    return 0 if exact and result["clients_unfinished"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

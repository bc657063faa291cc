"""The direct path (``direct.py``): broadcasts written straight to fast clients' sockets, slow ones handed back.

Real servers on loopback, real clients; the bytes on the wire are asserted exactly, framing included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from apptools import TIMEOUT, RunningApp, batch, ingest, read_until, running_app, stalled_sse_client, until

from lightning_stream.app import SSE, WS
from lightning_stream.config import ServerConfig
from lightning_stream.direct import HIGH_WATER, DirectSender, DirectStats, chunked, ws_text_frame
from lightning_stream.hub import Hub


def _parked(app: RunningApp, count: int) -> bool:
    """Every one of ``count`` SSE streams has its pump parked on the direct path."""
    streams = list(app.app[SSE]._streams)
    return len(streams) == count and all(s.direct is not None and s.direct.parked for s in streams)


async def _open_stream(app: RunningApp, version: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(app.host, app.port)
    writer.write(f"GET /stream HTTP/{version}\r\nHost: {app.host_header}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


def _sse(seq: int, steps: list[int]) -> bytes:
    points = ",".join(
        f'{{"run":"r","tag":"loss","step":{s},"wall_time":{1000.0 + s!r},"value":{s / 10!r}}}' for s in steps
    )
    return f'id: {seq}\nevent: scalars\ndata: {{"points":[{points}]}}\n\n'.encode()


async def test_http11_stream_gets_each_broadcast_as_one_chunk_written_directly() -> None:
    async with running_app() as app:
        reader, writer, head = await _open_stream(app, "1.1")
        try:
            assert b"Transfer-Encoding: chunked\r\n" in head
            assert await reader.readexactly(len(chunked(b"retry: 2000\n\n"))) == chunked(b"retry: 2000\n\n")
            await until(lambda: _parked(app, 1))
            expected = b""
            for i in range(1, 6):
                ingest(app.hub, batch("r", "loss", [i]))
                app.hub.flush()
                expected += chunked(_sse(i, [i]))
            # the raw bytes, chunk framing included: one chunk per frame, shared by every HTTP/1.1 client
            assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected
            stats = app.app[SSE].direct
            assert (stats.frames, stats.handovers) == (5, 0)
            assert app.app[SSE].bytes_sent == 0  # nothing went through the pump
        finally:
            writer.close()


async def test_http10_stream_gets_bare_frames_written_directly() -> None:
    async with running_app() as app:
        reader, writer, head = await _open_stream(app, "1.0")
        try:
            assert b"Transfer-Encoding" not in head
            assert await reader.readexactly(len(b"retry: 2000\n\n")) == b"retry: 2000\n\n"
            await until(lambda: _parked(app, 1))
            ingest(app.hub, batch("r", "loss", [1, 2]))
            app.hub.flush()
            frame = _sse(1, [1, 2])
            assert await asyncio.wait_for(reader.readexactly(len(frame)), 10) == frame
            assert app.app[SSE].direct.frames == 1
        finally:
            writer.close()


async def test_websocket_frames_go_directly_and_a_big_one_through_the_pump_in_order() -> None:
    async with (
        running_app() as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.ws_connect(app.url + "/ws") as ws,
    ):
        await ws.send_json({"op": "subscribe"})
        assert (await ws.receive(timeout=10)).json()["type"] == "subscribed"
        conn = next(iter(app.app[WS]._connections))
        # ~100 B (7-bit length), ~22 KB (16-bit length), ~150 KB (over the direct path's limit), ~100 B
        sizes = [1, 300, 2000, 1]
        step = 0
        for n in sizes:
            await until(lambda: conn.direct is not None and conn.direct.parked)
            ingest(app.hub, batch("r", "loss", range(step, step + n)))
            app.hub.flush()
            step += n
        got: list[int] = []
        for seq in range(1, len(sizes) + 1):
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            assert (data["type"], data["seq"]) == ("scalars", seq)
            got += [p["step"] for p in data["points"]]
        assert got == list(range(step))
        stats = app.app[WS].direct
        assert (stats.frames, stats.handovers, app.app[WS].messages_sent) == (3, 1, 1)


def test_websocket_frame_headers_use_the_shortest_length_form() -> None:
    assert ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
    assert ws_text_frame(b"") == b""
    assert chunked(b"") == b""  # nothing to send is never an empty chunk (that would end the body)


async def test_stalled_client_is_handed_to_its_pump_while_a_fast_one_stays_direct() -> None:
    async with running_app(subscriber_queue=8, replay_points=50_000) as app:
        stalled = stalled_sse_client(app)
        reader, writer, _ = await _open_stream(app, "1.1")
        try:
            await until(lambda: _parked(app, 2))
            n, per = 500, 250  # ~19 KB frames (under the direct path's limit), ~9 MB in all
            expected = chunked(b"retry: 2000\n\n") + b"".join(
                chunked(_sse(i + 1, list(range(i * per, (i + 1) * per)))) for i in range(n)
            )
            fast = asyncio.ensure_future(reader.readexactly(len(expected)))
            for i in range(n):
                ingest(app.hub, batch("r", "loss", range(i * per, (i + 1) * per)))
                app.hub.flush()
                await asyncio.sleep(0)  # the fast client reads as it goes
            # the fast client got every frame, byte for byte, although the stalled one stopped reading
            assert await asyncio.wait_for(fast, 20) == expected
            stats = app.app[SSE].direct
            assert stats.handovers >= 1  # the stalled one went to its pump...
            assert stats.frames >= n  # ...while the fast one (and the stalled one's first frames) went directly
            # the stalled client's private buffer stays bounded: the direct path stops at HIGH_WATER
            buffered = [t.get_write_buffer_size() for st in app.app[SSE]._streams if (t := st.request.transport)]
            assert max(buffered) < 4 * HIGH_WATER  # (the pump's own bound: aiohttp's drain plus one write)
            # once it reads again it is told to re-sync (it fell more than subscriber_queue behind)
            data = await asyncio.to_thread(read_until, stalled, b"event: reset", 10.0)
            assert b"event: reset" in data
        finally:
            stalled.close()
            writer.close()


def test_listener_is_called_per_broadcast_and_on_close_and_a_failing_one_is_closed() -> None:
    hub = Hub(ServerConfig(registry=False, watchdog_interval_s=0))
    calls: list[str] = []
    good = hub.subscribe()
    bad = hub.subscribe()

    def read_good() -> None:
        calls.append("good")
        with contextlib.suppress(Exception):
            while good.get_nowait() is not None:
                pass

    def fail() -> None:
        raise RuntimeError("a transport bug")

    good.listen(read_good)
    bad.listen(fail)
    hub.note_run("r", None)
    hub.ingest([batch("r", "loss", [1])])
    hub.flush()
    assert calls == ["good"]
    assert bad.closed  # the failing listener's subscription ended...
    assert not good.closed  # ...and the broadcast went on
    hub.publish_status("r", "finished")
    assert calls == ["good", "good"]
    good.close()
    assert calls == ["good", "good", "good"]  # told once more, so a parked pump learns it is closed
    hub.ingest([batch("r", "loss", [2])])
    hub.flush()
    assert len(calls) == 3


async def test_without_a_direct_path_the_pump_stays_parked_until_a_message_is_ready() -> None:
    hub = Hub(ServerConfig(registry=False, watchdog_interval_s=0))
    sub = hub.subscribe()
    sender = DirectSender(sub, None, lambda message: b"frame", DirectStats())  # None: every message to the pump
    assert await sender.park(0.01) is False  # nothing to send, no hand-over (it once spun the pump)
    parked = asyncio.ensure_future(sender.park(None))
    await until(lambda: sender.parked)
    ingest(hub, batch("r", "loss", [1]))
    hub.flush()
    assert await asyncio.wait_for(parked, 10) is True
    message = sender.take()
    assert message is not None
    assert message.kind == "scalars"
    assert sender.take() is None

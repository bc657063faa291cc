"""``/stream`` (SSE) on a real loopback port: exact bytes, resume, reset, filters, stalls, shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
from apptools import (
    TIMEOUT,
    RawSSE,
    SSEReader,
    batch,
    ingest,
    read_until,
    running_app,
    stalled_sse_client,
    until,
    wait_for_seq,
)

from lightning_stream.app import SSE


async def test_stream_frames_are_exact_bytes_with_id_event_and_data() -> None:
    async with running_app() as app:
        raw = await RawSSE.open(app)
        try:
            assert raw.status == 200
            assert b"Content-Type: text/event-stream; charset=utf-8\r\n" in raw.head
            assert b"Cache-Control: no-cache\r\n" in raw.head
            assert await raw.read_until(b"\n\n") == b"retry: 2000\n\n"
            ingest(app.hub, batch("r", "loss", [1, 2]))
            assert await raw.read_until(b"\n\n") == (
                b"id: 1\nevent: scalars\ndata: "
                b'{"points":[{"run":"r","tag":"loss","step":1,"wall_time":1001.0,"value":0.1},'
                b'{"run":"r","tag":"loss","step":2,"wall_time":1002.0,"value":0.2}]}\n\n'
            )
            app.hub.publish_status("r", "epoch", epoch=3)
            assert await raw.read_until(b"\n\n") == (
                b'id: 2\nevent: status\ndata: {"run":"r","state":"epoch","epoch":3}\n\n'
            )
        finally:
            await raw.close()


async def test_head_on_stream_is_refused_rather_than_held_open() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.head(app.url + "/stream") as r:
        assert r.status == 405
        assert app.app[SSE].count == 0


async def test_stream_after_the_hub_closed_is_503() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        await app.hub.close()
        async with s.get(app.url + "/stream") as r:
            assert r.status == 503
            assert "shutting down" in (await r.json())["error"]


async def test_idle_stream_sends_keepalive_comments() -> None:
    async with running_app(keepalive_s=0.2) as app:
        raw = await RawSSE.open(app)
        try:
            await raw.read_until(b"retry: 2000\n\n")
            assert await raw.read_until(b"\n\n") == b": keep-alive\n\n"
            assert await raw.read_until(b"\n\n") == b": keep-alive\n\n"
        finally:
            await raw.close()


async def test_run_and_tag_globs_filter_points() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        params = {"run": "train*", "tag": "loss/*"}
        async with s.get(app.url + "/stream", params=params) as r:
            reader = SSEReader(r)
            ingest(
                app.hub,
                batch("train/v0", "loss/step", [1]),
                batch("train/v0", "acc", [1]),
                batch("val", "loss/step", [1]),
                batch("train_b", "loss/epoch", [2]),
            )
            event = await reader.next_event()
    assert event.event == "scalars"
    got = {(p["run"], p["tag"], p["step"]) for p in event.data["points"]}
    assert got == {("train/v0", "loss/step", 1), ("train_b", "loss/epoch", 2)}


async def _collect(app: Any, since: int | None, want: int, *, header: bool) -> tuple[list[int], int]:
    """Connect (resuming after ``since``), read until ``want`` points, then drop the connection."""
    headers = {"Last-Event-ID": str(since)} if since is not None and header else {}
    params = {"last_event_id": str(since)} if since is not None and not header else {}
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(app.url + "/stream", headers=headers, params=params) as r,
    ):
        assert r.status == 200
        got, last = await SSEReader(r).points(want)
    return [step for _, _, step in got], last


@pytest.mark.parametrize("header", [True, False], ids=["Last-Event-ID", "last_event_id"])
async def test_resume_after_forced_disconnects_loses_and_repeats_nothing(header: bool) -> None:
    async with running_app(tick_s=0.001) as app:
        publisher_done = asyncio.Event()

        async def publish() -> None:
            for step in range(300):
                ingest(app.hub, batch("r", "loss", [step]))
                await asyncio.sleep(0.001)
            publisher_done.set()

        task = asyncio.create_task(publish())
        seen: list[int] = []
        last: int | None = 0
        while len(seen) < 300:
            chunk, last = await _collect(app, last, min(37, 300 - len(seen)), header=header)
            seen += chunk
        await task
    # a message can carry more points than asked for: everything up to its id was received
    assert seen[:300] == list(range(300))
    assert len(seen) == len(set(seen))


async def test_resume_older_than_the_replay_buffer_gets_reset_event() -> None:
    async with running_app(replay_points=10) as app:
        for step in range(40):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        raw = await RawSSE.open(app, headers={"Last-Event-ID": "2"})
        try:
            await raw.read_until(b"retry: 2000\n\n")
            frame = await raw.read_until(b"\n\n")
        finally:
            await raw.close()
    assert frame.startswith(b"id: 40\nevent: reset\ndata: {")
    assert b"no longer held" in frame


@pytest.mark.parametrize(
    ("query", "headers", "fragment"),
    [
        ("?last_event_id=abc", {}, "last_event_id='abc'"),
        ("", {"Last-Event-ID": "-3"}, "Last-Event-ID header=-3 is out of range"),
        ("?tag=", {}, "tag is empty"),
        ("?run=a%00b", {}, "control characters"),
        ("?run=" + "x" * 300, {}, "the limit is"),
    ],
)
async def test_bad_stream_parameters_are_400_json(query: str, headers: dict[str, str], fragment: str) -> None:
    async with (
        running_app() as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(app.url + "/stream" + query, headers=headers) as r,
    ):
        assert r.status == 400
        assert fragment in (await r.json())["error"]


async def test_stalled_client_is_reset_without_growing_memory_or_slowing_others() -> None:
    async with running_app(subscriber_queue=8, replay_points=20_000) as app:
        # A client that sends its request, then stops reading: its receive window fills up.
        stalled = stalled_sse_client(app)
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + "/stream") as r:
                reader = SSEReader(r)
                await until(lambda: app.app[SSE].count == 2)
                steps: list[int] = []
                n, per = 200, 1000  # ~13 MB of JSON, more than the kernel's socket buffers hold
                for i in range(n):
                    ingest(app.hub, batch("r", "loss", range(i * per, (i + 1) * per), value=1.0))
                    app.hub.flush()
                    while True:
                        event = await reader.next_event()
                        assert event.event == "scalars"  # the reader keeps up: never reset
                        steps += [p["step"] for p in event.data["points"]]
                        if steps[-1] == (i + 1) * per - 1:
                            break
                assert steps == list(range(n * per))
                # what the server holds for the stalled client: a bounded user-space buffer, and in the
                # hub only a cursor (the shared log is bounded by replay_points)
                transports = [st.request.transport for st in app.app[SSE]._streams]
                buffered = [t.get_write_buffer_size() for t in transports if t is not None]
                assert len(buffered) == 2
                assert max(buffered) < 1024 * 1024
                assert app.hub.stats()["replay_points"] <= 20_000
                # once it reads again, it is told to re-sync instead of receiving the whole backlog
                data = await asyncio.to_thread(read_until, stalled, b"event: reset")
                assert b"event: reset" in data
                assert app.hub.stats()["resets"] == 1
        finally:
            stalled.close()


async def test_shutdown_ends_streams_and_frees_the_port() -> None:
    async with running_app() as app:
        port = app.port
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + "/stream") as r:
            reader = SSEReader(r)
            await r.content.readline()  # retry:
            await asyncio.wait_for(app.runner.cleanup(), 10)
            with pytest.raises((ConnectionError, aiohttp.ClientPayloadError)):
                await reader.next_event()
    with socket.socket() as probe:
        # SO_REUSEADDR (as aiohttp's TCPSite) only ignores TIME_WAIT leftovers: a live listener still blocks
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


async def test_events_counted_and_stream_clients_in_health() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(app.url + "/stream") as r1, s.get(app.url + "/stream") as r2:
            assert (r1.status, r2.status) == (200, 200)
            async with s.get(app.url + "/health") as h:
                assert (await h.json())["clients"] == {"sse": 2, "ws": 0}
        ingest(app.hub, batch("r", "loss", [1]))
        await wait_for_seq(app.hub, 1)
        await until(lambda: app.app[SSE].count == 0)  # the server notices the closed connections


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["points", "columns"])
def test_fanout_benchmark_quick_run_loses_nothing(fmt: str) -> None:
    """Keeps ``benchmarks/bench_fanout.py`` from rotting (figures are not asserted: the machine is shared)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fanout.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", f"--format={fmt}"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["lost"] == result["extra"] == 0  # every client counted exactly what was published
    assert result["clients_kept_up"] == 40
    assert result["published"] > 0

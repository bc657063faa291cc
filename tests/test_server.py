"""StreamServer: start/stop on a real loopback port, publish, watch, restart, watchdog."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from lightning_stream import _inotify
from lightning_stream.errors import PortInUseError, ServerNotRunningError, ServerStartError
from lightning_stream.ports import bind_listener
from lightning_stream.registry import read_entries
from lightning_stream.server import StreamServer

TIMEOUT = aiohttp.ClientTimeout(total=20)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def write_scalars(logdir: Path, tag: str, values: list[float]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for step, value in enumerate(values):
        writer.add_scalar(tag, value, step)
    writer.close()


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(port=None, watchdog_interval_s=0).start()
    yield srv
    srv.stop()


def test_start_returns_with_health_answering_and_registry_entry_written(
    server: StreamServer, registry_dir: Path
) -> None:
    health = get_json(server.url + "/health")
    assert health["status"] == "ok"
    assert health["pid"] == os.getpid()
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.is_alive()
    (entry,) = read_entries()
    assert (entry.pid, entry.port, entry.url) == (os.getpid(), server.port, server.url)
    if os.name != "nt":
        assert stat.S_IMODE((registry_dir / entry.filename).stat().st_mode) == 0o600


def test_stop_frees_the_port_at_once_and_removes_the_registry_entry(registry_dir: Path) -> None:
    server = StreamServer(port=None, watchdog_interval_s=0).start()
    port = server.port
    get_json(server.url + "/health")  # leaves a server-side connection in TIME_WAIT
    server.stop()
    assert not server.is_alive()
    assert read_entries() == []
    bind_listener("127.0.0.1", port).close()  # no sleep, no EADDRINUSE
    server.stop()  # idempotent


def test_start_stop_start_on_one_fixed_port_many_times() -> None:
    port = StreamServer(port=None, watchdog_interval_s=0).start()
    fixed = port.port
    port.stop()
    for _ in range(50):
        server = StreamServer(port=fixed, strict_port=True, watchdog_interval_s=0).start()
        assert server.port == fixed
        server.stop()


def test_a_stopped_server_cannot_be_started_again(server: StreamServer) -> None:
    server.stop()
    with pytest.raises(ServerStartError, match="create a new one"):
        server.start()


def test_start_error_is_raised_in_the_callers_thread_with_a_fix() -> None:
    server = StreamServer(host="192.0.2.1", token="s3cret-token", watchdog_interval_s=0)
    with pytest.raises(ServerStartError, match=r"cannot bind '192\.0\.2\.1'.*127\.0\.0\.1"):
        server.start()
    assert not server.is_alive()


def test_strict_port_held_by_another_server_raises_port_in_use(server: StreamServer) -> None:
    with pytest.raises(PortInUseError, match=rf"port {server.port} .*pid {os.getpid()}"):
        StreamServer(port=server.port, strict_port=True).start()


def test_context_manager_stops_the_server_it_started(registry_dir: Path) -> None:
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        port = server.port
        assert get_json(server.url + "/health")["status"] == "ok"
    assert not server.is_alive()
    assert read_entries() == []
    bind_listener("127.0.0.1", port).close()


def test_points_published_from_many_threads_all_arrive_in_order(server: StreamServer) -> None:
    n = 500

    def publish(thread: int) -> None:
        for step in range(n):
            server.publish("run", f"t{thread}", step, step * 0.5)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def arrived(tag: str) -> list[list[float]]:
        return list(get_json(f"{server.url}/api/scalars?run=run&tag={tag}")["points"])

    wait_until(lambda: all(len(arrived(f"t{i}")) == n for i in range(4)))
    for i in range(4):
        assert [p[0] for p in arrived(f"t{i}")] == list(range(n))
        assert [p[2] for p in arrived(f"t{i}")] == [s * 0.5 for s in range(n)]


def test_publish_checks_arguments_in_the_callers_thread(server: StreamServer) -> None:
    with pytest.raises(TypeError):
        server.publish("run", "tag", 1.5, 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be str"):
        server.publish(1, "tag", 1, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a run state"):
        server.publish_status("run", "exploded")


def test_publish_without_a_running_server_says_to_start_it() -> None:
    server = StreamServer(port=None, watchdog_interval_s=0)
    with pytest.raises(ServerNotRunningError, match="start"):
        server.publish("run", "tag", 1, 0.1)
    with server:
        server.publish("run", "tag", 1, 0.1)
    with pytest.raises(ServerNotRunningError, match="stopped"):
        server.publish("run", "tag", 2, 0.1)


def test_status_follows_the_points_published_before_it(server: StreamServer) -> None:
    server.publish("run", "loss", 1, 0.5)
    server.publish_status("run", "epoch", epoch=1)
    wait_until(
        lambda: any(r["run"] == "run" and r.get("status") == "epoch" for r in get_json(server.url + "/api/runs"))
    )
    assert get_json(f"{server.url}/api/scalars?run=run&tag=loss")["points"][0][0] == 1


def test_watch_reads_existing_event_files_before_returning(
    server: StreamServer, tmp_path: Path, registry_dir: Path
) -> None:
    write_scalars(tmp_path / "logs" / "version_0", "loss", [3.0, 2.0, 1.0])
    server.watch(tmp_path / "logs")
    runs = get_json(server.url + "/api/runs")
    assert [r["run"] for r in runs] == ["version_0"]
    points = get_json(f"{server.url}/api/scalars?run=version_0&tag=loss")["points"]
    assert [(p[0], p[2]) for p in points] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert server.logdirs == [str(tmp_path / "logs")]
    assert read_entries()[0].logdirs == (str(tmp_path / "logs"),)
    server.watch(str(tmp_path / "logs"))  # idempotent
    assert server.unwatch(tmp_path / "logs")
    assert not server.unwatch(tmp_path / "logs")
    assert read_entries()[0].logdirs == ()


def test_watch_picks_up_scalars_written_later(server: StreamServer, tmp_path: Path) -> None:
    server.watch(tmp_path, prefix="exp")
    write_scalars(tmp_path / "v1", "acc", [0.1, 0.2])

    def points() -> list[Any]:
        try:
            return list(get_json(f"{server.url}/api/scalars?run=exp/v1&tag=acc")["points"])
        except urllib.error.HTTPError:
            return []

    wait_until(lambda: len(points()) == 2)


def test_restart_keeps_the_port_rereads_logdirs_and_counts(server: StreamServer, tmp_path: Path) -> None:
    write_scalars(tmp_path / "run", "loss", [1.0, 0.5])
    server.watch(tmp_path)
    port = server.port
    server.restart()
    assert server.port == port
    health = get_json(server.url + "/health")
    assert health["restarts"] == 1
    assert len(get_json(f"{server.url}/api/scalars?run=run&tag=loss")["points"]) == 2
    server.publish("live", "x", 1, 1.0)  # the new incarnation takes publishes
    wait_until(lambda: any(r["run"] == "live" for r in get_json(server.url + "/api/runs")))


def test_watchdog_restarts_a_server_whose_loop_was_stopped_on_the_same_port(registry_dir: Path) -> None:
    with StreamServer(port=None, watchdog_interval_s=0.05) as server:
        port = server.port
        inc = server._inc
        assert inc is not None
        inc.loop.call_soon_threadsafe(inc.loop.stop)  # really break it: the loop thread ends
        wait_until(lambda: server.restarts == 1 and server.is_alive())
        assert server.port == port
        assert get_json(server.url + "/health")["restarts"] == 1
        assert [e.port for e in read_entries()] == [port]


def test_watchdog_restarts_a_server_whose_loop_hangs(registry_dir: Path) -> None:
    with StreamServer(port=None, watchdog_interval_s=0.1) as server:
        port = server.port
        inc = server._inc
        assert inc is not None
        release = threading.Event()
        inc.loop.call_soon_threadsafe(release.wait, 30)  # blocks the server loop
        try:
            wait_until(lambda: server.restarts == 1 and server.is_alive())
        finally:
            release.set()
        assert server.port == port
        assert get_json(server.url + "/health")["restarts"] == 1
        assert inc.thread is not None
        inc.thread.join(10)  # the abandoned incarnation tears itself down once unblocked
        assert not inc.thread.is_alive()
        assert get_json(server.url + "/health")["status"] == "ok"


async def test_works_from_inside_a_running_event_loop() -> None:
    server = StreamServer(port=None, watchdog_interval_s=0).start()  # blocks briefly; never uses our loop
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(server.url + "/health") as response:
            assert (await response.json())["pid"] == os.getpid()
    finally:
        await asyncio.to_thread(server.stop)


async def test_stop_ends_sse_streams_and_closes_websockets_with_going_away() -> None:
    server = await asyncio.to_thread(lambda: StreamServer(port=None, watchdog_interval_s=0).start())
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        sse = await session.get(server.url + "/stream")
        assert sse.status == 200
        ws = await session.ws_connect(server.url + "/ws")
        await ws.send_json({"op": "subscribe", "run": "*", "tag": "*"})
        assert (await ws.receive_json())["type"] == "subscribed"
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        message = await ws.receive()
        assert message.type == WSMsgType.CLOSE
        assert message.data == WSCloseCode.GOING_AWAY
        while await sse.content.readany():  # the stream ends (EOF), it does not hang
            pass
        await stopping
        await ws.close()
        sse.release()
    assert not server.is_alive()


def test_watchdog_check_leaves_a_healthy_server_alone_and_restarts_a_dead_one(server: StreamServer) -> None:
    from lightning_stream.watchdog import Watchdog

    dog = Watchdog(server, interval_s=60)  # never started: check() is called by hand
    assert dog.check() is None
    assert server.restarts == 0
    inc = server._inc
    assert inc is not None
    assert inc.thread is not None
    inc.loop.call_soon_threadsafe(inc.loop.stop)
    inc.thread.join(10)
    assert dog.check() == "the server thread died"
    assert server.restarts == 1
    assert server.is_alive()
    assert dog.check() is None


def test_restarts_leave_no_previous_incarnation_alive() -> None:
    import gc
    import urllib.request
    import weakref

    with StreamServer(port=None, watchdog_interval_s=0) as server:
        old_hubs = []
        for _ in range(3):
            urllib.request.urlopen(f"{server.url}/health", timeout=10).read()  # through the middlewares
            old_hubs.append(weakref.ref(server._inc.hub))  # type: ignore[union-attr]
            server.restart()
        gc.collect()
        assert [ref() is None for ref in old_hubs] == [True, True, True]


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only (the poll reads on its own clock)")
def test_many_subscribers_get_a_fast_run_in_fewer_bigger_broadcasts_and_every_point(
    server: StreamServer, tmp_path: Path
) -> None:
    from lightning_stream.hub import MAX_BROADCAST_GAP_S
    from tests.eventfiles import append_flushed_for, records, simple_event
    from tests.livetools import Subscriber

    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("warmup", 0, 1.0, 0.0)]))
    server.watch(tmp_path, prefix="fast")
    subscribers = [Subscriber(server.url, tag="loss").__enter__() for _ in range(16)]  # 16 -> the longest gap
    try:
        started = time.monotonic()
        # ~1,500 steps a second, a pause after each: a read then holds < MAX_MESSAGE_POINTS, one message per broadcast
        written = append_flushed_for(path, 1.5, tag="loss", pause_every=1, wall_time=1.0)
        for sub in subscribers:
            assert sub.wait_for(lambda s: len(s.points) >= written), (len(sub.points), written, sub.errors)
        elapsed = time.monotonic() - started
        for sub in subscribers:
            assert [p[2] for p in sub.snapshot()] == list(range(written))  # each once, in order
        # Broadcasts MAX_BROADCAST_GAP_S apart once the rate is known; the watcher's own 80 ms cap
        # (a server that ignored its subscriber count) would send ~3 times as many.
        broadcasts = len(subscribers[0].seqs)
        assert broadcasts <= 1.5 * elapsed / MAX_BROADCAST_GAP_S + 3, (broadcasts, elapsed)
    finally:
        for sub in subscribers:
            sub.close()

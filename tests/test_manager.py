"""StreamServerManager: lazy start, ref counts, reuse vs launch, ports, threads, linger."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lightning_stream import (
    AcquireResult,
    PortInUseError,
    ServerConfig,
    ServerNotRunningError,
    StreamServer,
    StreamServerManager,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)
from lightning_stream.ports import bind_listener
from lightning_stream.registry import read_entries

NO_WATCHDOG = {"watchdog_interval_s": 0}


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def free_port() -> int:
    sock = bind_listener("127.0.0.1", 0)
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def manager() -> Iterator[StreamServerManager]:
    mgr = StreamServerManager()
    yield mgr
    mgr.cleanup()


# ---- the seed's three tests, done right ---------------------------------------------------------


def test_acquire_release_on_one_fixed_port_200_times_in_a_row(manager: StreamServerManager) -> None:
    port = free_port()
    for _ in range(200):
        result = manager.acquire_result(port=port, strict_port=True, **NO_WATCHDOG)
        assert result.launched
        assert result.server.port == port
        assert manager.release()
        assert not manager.is_server_running()
    assert read_entries() == []


def test_two_different_ports_at_once(manager: StreamServerManager) -> None:
    a = manager.acquire(port=free_port(), **NO_WATCHDOG)
    b = manager.acquire(port=free_port(), **NO_WATCHDOG)
    assert a is not b
    assert a.port != b.port
    assert health(a.url)["status"] == health(b.url)["status"] == "ok"
    assert sorted(e.port for e in read_entries()) == sorted([a.port, b.port])
    manager.release(a)
    assert not a.is_alive()
    assert b.is_alive()


def test_second_acquire_reuses_the_first_server(manager: StreamServerManager) -> None:
    first = manager.acquire_result(**NO_WATCHDOG)
    second = manager.acquire_result(**NO_WATCHDOG)
    assert isinstance(first, AcquireResult)
    assert first.launched
    assert second.reused
    assert second.server is first.server
    assert "reusing" in second.message
    assert first.server.url in second.message
    assert manager.refcount(first.server) == 2
    assert not manager.release()
    assert first.server.is_alive()
    port = first.server.port
    assert manager.release()
    assert not first.server.is_alive()
    bind_listener("127.0.0.1", port).close()  # free the moment release() returns


# ---- keying and configuration -------------------------------------------------------------------


def test_port_none_reuses_the_server_started_on_a_fixed_port(manager: StreamServerManager) -> None:
    fixed = manager.acquire(port=free_port(), **NO_WATCHDOG)
    assert manager.acquire(port=None, **NO_WATCHDOG) is fixed
    assert manager.acquire(port=fixed.port, **NO_WATCHDOG) is fixed


def test_a_fallen_back_server_is_reused_for_the_port_first_asked_for(manager: StreamServerManager) -> None:
    held = bind_listener("127.0.0.1", 0)
    busy = held.getsockname()[1]
    try:
        first = manager.acquire_result(port=busy, **NO_WATCHDOG)
        assert first.server.port != busy
        assert f"port {busy}" in first.message
        assert manager.acquire(port=busy, **NO_WATCHDOG) is first.server
    finally:
        held.close()


def test_conflicting_option_is_an_explicit_error_naming_it(manager: StreamServerManager) -> None:
    manager.acquire(tick_s=0.01, **NO_WATCHDOG)
    with pytest.raises(ValueError, match=r"tick_s=0\.01, not 0\.02.*second server"):
        manager.acquire(tick_s=0.02, **NO_WATCHDOG)
    with pytest.raises(ValueError, match="token=<hidden>"):
        manager.acquire(token="another-secret", **NO_WATCHDOG)
    assert manager.refcount() == 1


def test_whole_config_objects_are_compared_field_by_field(manager: StreamServerManager) -> None:
    config = ServerConfig(watchdog_interval_s=0)
    server = manager.acquire(config)
    assert manager.acquire(config=config) is server
    with pytest.raises(ValueError, match="replay_points"):
        manager.acquire(config.replace(replay_points=10))


def test_invalid_options_are_rejected_before_anything_starts(manager: StreamServerManager) -> None:
    with pytest.raises(ValueError, match=r"port=70000 is out of range"):
        manager.acquire(port=70000)
    with pytest.raises(TypeError, match="unknown server option 'prot'"):
        manager.acquire(prot=8080)
    with pytest.raises(ValueError, match="pass token="):
        manager.acquire(host="0.0.0.0")
    assert not manager.is_server_running()


def test_strict_port_held_by_another_process_names_it(manager: StreamServerManager, tmp_path: Path) -> None:
    other = StreamServerManager()  # stands for another process: same registry, own servers
    try:
        theirs = other.acquire(**NO_WATCHDOG)
        theirs.watch(tmp_path)
        with pytest.raises(PortInUseError, match=rf"pid {os.getpid()} .*{tmp_path.name}.*port=None") as info:
            manager.acquire(port=theirs.port, strict_port=True, **NO_WATCHDOG)
        assert info.value.owner_pid == os.getpid()
        fallback = manager.acquire_result(port=theirs.port, **NO_WATCHDOG)
        assert fallback.launched
        assert fallback.server.port != theirs.port
        assert f"held by pid {os.getpid()}" in fallback.message
    finally:
        other.cleanup()


# ---- release, restart, cleanup ------------------------------------------------------------------


def test_release_with_nothing_acquired_is_a_no_op(manager: StreamServerManager) -> None:
    assert not manager.release()
    server = manager.acquire(**NO_WATCHDOG)
    assert manager.release(server)
    assert not manager.release(server)


def test_release_without_argument_releases_the_latest_acquisition(manager: StreamServerManager) -> None:
    a = manager.acquire(port=free_port(), **NO_WATCHDOG)
    b = manager.acquire(port=free_port(), **NO_WATCHDOG)
    assert manager.release()
    assert not b.is_alive()
    assert a.is_alive()


def test_context_manager_releases_its_reference(manager: StreamServerManager) -> None:
    outer = manager.acquire(**NO_WATCHDOG)
    with manager.acquire(**NO_WATCHDOG) as server:
        assert server is outer
        assert manager.refcount(server) == 2
    assert manager.refcount(server) == 1
    assert server.is_alive()


def test_force_restart_keeps_port_and_references(manager: StreamServerManager) -> None:
    server = manager.acquire(**NO_WATCHDOG)
    port = server.port
    assert manager.force_restart() is server
    assert server.port == port
    assert health(server.url)["restarts"] == 1
    assert manager.refcount(server) == 1


def test_force_restart_without_a_server_says_to_acquire(manager: StreamServerManager) -> None:
    with pytest.raises(ServerNotRunningError, match="acquire"):
        manager.force_restart()


def test_cleanup_stops_everything_whatever_the_counts(manager: StreamServerManager) -> None:
    a = manager.acquire(port=free_port(), **NO_WATCHDOG)
    manager.acquire(port=a.port, **NO_WATCHDOG)
    b = manager.acquire(port=free_port(), **NO_WATCHDOG)
    assert manager.cleanup() == 2
    assert not a.is_alive()
    assert not b.is_alive()
    assert manager.refcount() == 0
    assert read_entries() == []


def test_a_server_stopped_behind_the_managers_back_is_replaced(manager: StreamServerManager) -> None:
    server = manager.acquire(**NO_WATCHDOG)
    server.stop()
    result = manager.acquire_result(**NO_WATCHDOG)
    assert result.launched
    assert result.server is not server
    assert not manager.release(server)


def test_linger_keeps_the_server_for_a_back_to_back_acquire() -> None:
    manager = StreamServerManager(linger_s=0.3)
    try:
        first = manager.acquire(**NO_WATCHDOG)
        assert not manager.release()
        assert first.is_alive()  # lingering
        again = manager.acquire_result(**NO_WATCHDOG)
        assert again.reused
        assert again.server is first
        manager.release()
        wait_until(lambda: not first.is_alive() and read_entries() == [])  # the timer's stop() completes
    finally:
        manager.cleanup()


def test_linger_must_be_a_sane_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="linger_s=-1"):
        StreamServerManager(linger_s=-1)


# ---- threads and loops --------------------------------------------------------------------------


def test_eight_threads_acquiring_and_releasing_concurrently(manager: StreamServerManager) -> None:
    errors: list[BaseException] = []
    seen: set[int] = set()
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(15):
                server = manager.acquire(**NO_WATCHDOG)
                assert server.is_alive()
                seen.add(server.port)
                server.publish("run", "t", 1, 1.0)
                manager.release(server)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert seen
    assert manager.refcount() == 0
    assert not manager.is_server_running()
    assert read_entries() == []


async def test_acquire_from_inside_a_running_event_loop(manager: StreamServerManager) -> None:
    server = manager.acquire(**NO_WATCHDOG)  # the server has its own loop; ours keeps running
    async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as response:
        assert (await response.json())["status"] == "ok"
    await asyncio.to_thread(manager.release, server)
    assert not server.is_alive()


# ---- the process-wide manager -------------------------------------------------------------------


def test_global_manager_is_one_object_across_threads() -> None:
    found: list[StreamServerManager] = []
    threads = [threading.Thread(target=lambda: found.append(get_stream_server_manager())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in found}) == 1
    assert found[0] is get_stream_server_manager()


def test_shorthands_acquire_and_release_on_the_global_manager() -> None:
    manager = get_stream_server_manager()
    try:
        server = get_stream_server(**NO_WATCHDOG)
        assert isinstance(server, StreamServer)
        assert manager.is_server_running(server)
        assert release_stream_server(server)
        assert not server.is_alive()
    finally:
        manager.cleanup()

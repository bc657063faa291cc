"""The stream server in a child process (``isolated.py``): real child processes, real sockets.

Bounded waits below are deadlines for something that must happen, never timing assertions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import portpicker
import psutil
import pytest

from lightning_stream import StreamServer, list_servers
from lightning_stream.child import CHILD_NICE
from lightning_stream.errors import PortInUseError, ServerNotRunningError
from lightning_stream.isolated import OUTBOX_LIMIT, IsolatedStreamServer
from lightning_stream.manager import StreamServerManager
from lightning_stream.ports import bind_listener
from tests.eventfiles import WALL_TIME, write_tensorboard
from tests.livetools import Subscriber
from tests.proctools import end_process

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def server_processes() -> list[psutil.Process]:
    """Our server children (``python -m lightning_stream.child``) still running."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "lightning_stream.child" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture
def manager() -> Iterator[StreamServerManager]:
    manager = StreamServerManager()
    yield manager
    manager.cleanup()
    assert server_processes() == []


def isolated(manager: StreamServerManager, **kw: Any) -> IsolatedStreamServer:
    server = manager.acquire(isolated=True, **kw)
    assert isinstance(server, IsolatedStreamServer)
    return server


def test_serves_from_a_child_process_and_stops_with_the_port_free(
    manager: StreamServerManager, tmp_path: Path, registry_dir: Path
) -> None:
    points = [("loss", step, WALL_TIME + step, 1.0 / (step + 1)) for step in range(50)]
    write_tensorboard(tmp_path / "run1", points)
    server = isolated(manager)
    assert server.pid is not None
    assert server.pid != os.getpid()
    assert get_json(f"{server.url}/health")["pid"] == server.pid
    assert [(i.pid, i.port) for i in list_servers()] == [(server.pid, server.port)]

    server.watch(tmp_path)  # returns after the child's first scan
    runs = get_json(f"{server.url}/api/runs")
    assert [(r["run"], r["last_step"]) for r in runs] == [("run1", 49)]
    assert [i.logdirs for i in list_servers()] == [(str(tmp_path),)]

    with Subscriber(server.url, "sse", run="manual") as sse:
        server.publish("manual", "x", 7, 2.5, wall_time=WALL_TIME)
        server.publish_status("manual", "finished")
        assert sse.wait_for(lambda s: s.points and s.statuses)
        assert sse.points == [("manual", "x", 7, 2.5)]
        assert sse.statuses[0]["state"] == "finished"

    assert server.unwatch(tmp_path) is True
    assert server.unwatch(tmp_path) is False
    child, port = psutil.Process(server.pid), server.port
    assert manager.release(server) is True
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert list(registry_dir.iterdir()) == []
    bind_listener("127.0.0.1", port).close()  # free at once: no sleep, no EADDRINUSE
    with pytest.raises(ServerNotRunningError, match="stopped"):
        server.publish("manual", "x", 8, 1.0)


def test_stop_then_start_on_the_same_port_works_every_time(manager: StreamServerManager) -> None:
    port = portpicker.pick_unused_port()
    pids = set()
    for _ in range(5):
        server = isolated(manager, port=port, strict_port=True)
        assert server.port == port
        assert get_json(f"{server.url}/health")["status"] == "ok"
        pids.add(server.pid)
        manager.release(server)
    assert len(pids) == 5


def test_restart_in_place_keeps_the_port_and_the_process(manager: StreamServerManager, tmp_path: Path) -> None:
    write_tensorboard(tmp_path / "r", [("a", 1, WALL_TIME, 1.0)])
    server = isolated(manager)
    server.watch(tmp_path)
    pid, port = server.pid, server.port
    assert manager.force_restart(server) is server
    assert (server.pid, server.port, server.restarts) == (pid, port, 1)
    assert [r["run"] for r in get_json(f"{server.url}/api/runs")] == ["r"]  # re-read by the new incarnation


def test_a_killed_server_process_comes_back_on_the_same_port_with_its_logdirs(
    manager: StreamServerManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_tensorboard(tmp_path / "r", [("a", step, WALL_TIME, float(step)) for step in range(10)])
    server = isolated(manager)
    server.watch(tmp_path)
    old, port = server.pid, server.port
    assert old is not None
    os.kill(old, signal.SIGKILL)  # a crash, or the OOM killer
    assert wait_until(lambda: server.pid != old and server.is_alive())
    assert server.port == port
    assert server.restarts == 1
    assert [(r["run"], r["last_step"]) for r in get_json(f"{server.url}/api/runs")] == [("r", 9)]
    assert [(i.pid, i.port) for i in list_servers()] == [(server.pid, port)]
    assert f"exited with code {-signal.SIGKILL}" in caplog.text


def test_a_server_process_stopped_with_sigterm_stays_stopped_until_the_next_acquire(
    manager: StreamServerManager, registry_dir: Path
) -> None:
    server = isolated(manager)
    old, port = server.pid, server.port
    assert old is not None
    os.kill(old, signal.SIGTERM)  # someone stopped it on purpose: it removes its own entry
    assert wait_until(lambda: not server.is_alive())
    assert wait_until(lambda: list(registry_dir.iterdir()) == [])
    with pytest.raises(ServerNotRunningError, match=r"exited with code -15.*force_restart"):
        server.watch(registry_dir)
    again = manager.acquire(isolated=True)  # the manager restarts a dead server it holds
    assert again is server
    assert server.is_alive()
    assert (server.port, server.pid != old) == (port, True)


def test_ctrl_c_in_the_terminal_is_for_training_not_for_the_server(manager: StreamServerManager) -> None:
    server = isolated(manager)
    assert server.pid is not None
    assert os.getsid(server.pid) != os.getsid(0)  # its own session: a terminal's Ctrl-C does not reach it
    os.kill(server.pid, signal.SIGINT)  # and sent directly, it is ignored
    assert get_json(f"{server.url}/health")["pid"] == server.pid
    assert server.is_alive()


@pytest.mark.skipif(
    not hasattr(os, "sched_getscheduler"),
    reason="SCHED_BATCH and os.sched_getscheduler exist on Linux only; elsewhere the child keeps only its nice value",
)
def test_the_server_process_yields_the_cpu_to_training(manager: StreamServerManager) -> None:
    server = isolated(manager)
    assert server.pid is not None
    assert psutil.Process(server.pid).nice() == min(psutil.Process().nice() + CHILD_NICE, 19)
    assert os.sched_getscheduler(server.pid) == os.SCHED_BATCH
    autogroup = Path(f"/proc/{server.pid}/autogroup")  # kernels with autogroup scheduling
    if autogroup.exists():
        assert autogroup.read_text().split()[-1] == str(CHILD_NICE)
        assert autogroup.read_text() != Path("/proc/self/autogroup").read_text()  # its own session's group


def test_a_busy_strict_port_raises_port_in_use_in_the_caller(manager: StreamServerManager) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=str(port)) as info:
            manager.acquire(isolated=True, port=port, strict_port=True)
        assert info.value.port == port
        assert server_processes() == []  # the child that could not bind is gone
        fallback = isolated(manager, port=port)  # not strict: a free port instead, and the reason
        assert fallback.port != port
        assert str(port) in fallback.fallback_message
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("interpreter", "why"), [("/nonexistent/python3", "could not start"), ("/bin/false", "exited with code 1")]
)
def test_without_a_usable_interpreter_the_manager_serves_from_a_thread(
    manager: StreamServerManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    interpreter: str,
    why: str,
) -> None:
    monkeypatch.setattr(sys, "executable", interpreter)  # e.g. a frozen app, or an embedded interpreter
    with caplog.at_level(logging.WARNING):
        server = manager.acquire(isolated=True)
    assert type(server) is StreamServer
    assert get_json(f"{server.url}/health")["pid"] == os.getpid()
    assert why in caplog.text
    assert "serving from a thread of this process instead" in caplog.text


def test_publish_never_blocks_on_a_stuck_server_process(
    manager: StreamServerManager, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    server = isolated(manager)
    assert server.pid is not None
    child = psutil.Process(server.pid)
    child.suspend()  # SIGSTOP: it reads nothing; the pipe fills, then the outbox
    try:
        for step in range(OUTBOX_LIMIT + 20_000):
            server.publish("stuck", "x", step, 0.0)
        assert "is not reading; dropping published points" in caplog.text
    finally:
        child.resume()
    server.watch(tmp_path)  # a request waits behind everything queued: the backlog is through
    with Subscriber(server.url, "sse", run="after") as sse:
        server.publish("after", "x", 1, 1.0)
        assert sse.wait_for(lambda s: s.points == [("after", "x", 1, 1.0)], timeout=60)
    runs = {r["run"]: r for r in get_json(f"{server.url}/api/runs")}
    assert runs["stuck"]["last_step"] < OUTBOX_LIMIT + 20_000  # the newest beyond the bound were dropped


HOLD = textwrap.dedent(
    """
    import json, sys, time
    from lightning_stream import get_stream_server_manager
    server = get_stream_server_manager().acquire(isolated=True)
    server.watch(sys.argv[1])
    print(json.dumps({"pid": server.pid, "port": server.port}), flush=True)
    time.sleep(120)
    """
)


def test_a_killed_training_process_leaves_no_orphan_server(tmp_path: Path, registry_dir: Path) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert trainer.stdout is not None
        started = json.loads(trainer.stdout.readline())
        assert [(i.pid, i.port) for i in list_servers()] == [(started["pid"], started["port"])]
        trainer.kill()  # SIGKILL: no atexit, no release; the server's stdin closes with the process
        trainer.wait(30)
        assert wait_until(lambda: not psutil.pid_exists(started["pid"]))
        assert list(registry_dir.iterdir()) == []  # it stopped cleanly: its own entry is gone
        bind_listener("127.0.0.1", started["port"]).close()
    finally:
        end_process(trainer)

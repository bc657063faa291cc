"""Real processes: SIGKILL, SIGTERM, atexit and fork against servers and the port registry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_stream.isolated import IsolatedStreamServer
from lightning_stream.registry import list_servers, read_entries
from lightning_stream.server import StreamServer
from tests.proctools import end_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork"),
]

ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent(
    """
    import signal, sys, time
    from lightning_stream import get_stream_server

    if sys.argv[2] == "own-handler":
        def handler(signum, frame):
            print("own handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
    server = get_stream_server(watchdog_interval_s=0)
    server.watch(sys.argv[1])
    print(server.port, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)  # no release: atexit must clean up
    # Short sleeps, not one long one: a signal that lands just before a blocking sleep starts has its
    # Python handler run only when the sleep ends (a CPython race); a training loop never sleeps long.
    for _ in range(1200):
        time.sleep(0.1)
    """
)


@pytest.fixture
def holder(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A subprocess holding a server (mode in ``request.param``); yields (process, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), getattr(request, "param", "sleep")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"holder failed to start: {line!r}"
        yield proc, int(line)
    finally:
        end_process(proc)


def test_sigkilled_holder_is_pruned_and_its_port_can_be_served_again(
    holder: tuple[subprocess.Popen[str], int], registry_dir: Path, tmp_path: Path
) -> None:
    proc, port = holder
    (live,) = list_servers()
    assert (live.pid, live.port, live.logdirs) == (proc.pid, port, (str(tmp_path),))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert [e.pid for e in read_entries()] == [proc.pid]  # SIGKILL leaves the file behind...
    assert list_servers() == []  # ...and the first reader prunes it
    assert read_entries() == []
    with StreamServer(port=port, strict_port=True, watchdog_interval_s=0) as server:
        assert server.port == port
        assert [i.pid for i in list_servers()] == [os.getpid()]


def test_sigterm_stops_the_server_removes_the_entry_and_still_kills(
    holder: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = holder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM  # the default action ran after our cleanup
    assert read_entries() == []
    StreamServer(port=port, strict_port=True, watchdog_interval_s=0).start().stop()


@pytest.mark.parametrize("holder", ["own-handler"], indirect=True)
def test_sigterm_chains_to_the_handler_installed_before(holder: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = holder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 3
    assert proc.stdout is not None
    assert "own handler ran" in proc.stdout.read()
    assert read_entries() == []


@pytest.mark.parametrize("holder", ["exit"], indirect=True)
def test_normal_exit_without_release_cleans_up_at_exit(holder: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = holder
    assert proc.wait(30) == 0
    assert read_entries() == []
    StreamServer(port=port, strict_port=True, watchdog_interval_s=0).start().stop()


FORK = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from lightning_stream import ServerNotRunningError, get_stream_server_manager
    from lightning_stream.health import health_check
    from lightning_stream.registry import read_entries

    manager = get_stream_server_manager()
    server = manager.acquire(watchdog_interval_s=0)

    def child() -> None:
        checks = {"manager_forgot": not manager.is_server_running(), "server_inert": not server.is_alive()}
        try:
            server.publish("run", "tag", 1, 1.0)
            checks["publish_refused"] = False
        except ServerNotRunningError as exc:
            checks["publish_refused"] = "fork of pid" in str(exc)
        checks["release_no_op"] = manager.release() is False
        server.stop()
        checks["cleanup_no_op"] = manager.cleanup() == 0
        own = manager.acquire(watchdog_interval_s=0)  # the child may run its own server
        checks["own_server"] = own is not server and own.port != server.port
        manager.release(own)
        print(json.dumps(checks), flush=True)
        sys.exit(0 if all(checks.values()) else 1)  # a normal exit: inherited atexit hooks run

    pid = os.fork()
    if pid == 0:
        child()
    first = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(ready_w, b"x")  # a signal that lands before the child runs Python code is dropped
        time.sleep(60)
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGTERM)  # the inherited SIGTERM handler must not touch our server
    second = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    result = {
        "first_child": first,
        "second_child": second,
        "alive": server.is_alive(),
        "health_pid": (health_check(server.host, server.port) or {}).get("pid"),
        "entries": [[e.pid, e.port] for e in read_entries()],
        "pid": os.getpid(),
        "port": server.port,
    }
    print(json.dumps(result), flush=True)
    manager.release()
    """
)


def test_forked_children_leave_the_parents_server_and_registry_alone() -> None:
    proc = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    child: dict[str, Any] = lines[0]
    parent: dict[str, Any] = lines[-1]
    assert all(child.values()), child
    assert parent["first_child"] == 0
    assert parent["second_child"] == -signal.SIGTERM
    assert parent["alive"]
    assert parent["health_pid"] == parent["pid"]
    assert parent["entries"] == [[parent["pid"], parent["port"]]]
    assert read_entries() == []  # the parent's release removed it


def test_benchmark_quick_run_succeeds() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_lifecycle.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "failures" in proc.stdout


def _blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals ``thread`` blocks, as the kernel says (``SigBlk`` in /proc)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread signal masks from Linux's /proc")
def test_our_threads_leave_process_signals_to_the_main_thread(tmp_path: Path) -> None:
    # A `kill PID` may land on any thread that does not block it; on one of ours, a main thread
    # asleep in time.sleep would never run the SIGTERM handler (the holder above hung so).
    thread_server = StreamServer(port=None).start()  # loop thread and watchdog
    child_server = IsolatedStreamServer(port=None).start()  # writer and reader threads
    try:
        thread_server.watch(tmp_path)
        inc = thread_server._backend._inc  # type: ignore[attr-defined]
        assert inc is not None
        worker_id = asyncio.run_coroutine_threadsafe(asyncio.to_thread(threading.get_native_id), inc.loop).result(10)
        ours = [t for t in threading.enumerate() if t.name.startswith("lightning-stream")]
        assert len(ours) >= 4, [t.name for t in ours]
        for thread in ours:
            assert {signal.SIGTERM, signal.SIGINT} <= _blocked_signals(thread), thread.name
        worker = next(t for t in threading.enumerate() if t.native_id == worker_id)  # asyncio's executor
        assert {signal.SIGTERM, signal.SIGINT} <= _blocked_signals(worker)
        assert signal.SIGTERM not in _blocked_signals(threading.main_thread())
    finally:
        child_server.stop()
        thread_server.stop()

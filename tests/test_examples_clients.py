"""The client-side examples run as a user runs them: real subprocesses, a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_stream.client import StreamClient
from lightning_stream.config import ServerConfig
from lightning_stream.registry import list_servers
from lightning_stream.server import StreamServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WAIT_S = 60.0


@pytest.fixture
def server() -> Iterator[StreamServer]:
    with StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)) as srv:
        yield srv


def wait_for_sse_client(url: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while StreamClient(url).health()["clients"]["sse"] < 1:
        assert time.monotonic() < deadline, "the example never connected"
        time.sleep(0.05)


def run_client(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "client.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_client_example_prints_live_points_and_stops_after_count(server: StreamServer) -> None:
    proc = run_client(server.url, "--tag", "train/*", "--count", "3", "--timeout", str(WAIT_S))
    wait_for_sse_client(server.url)
    server.publish("run-a", "val/acc", 0, 0.5)  # not matched by --tag
    for step in range(4):
        server.publish("run-a", "train/loss", step, 1.0 / (step + 1))
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"connected to {server.url}: version ")
    assert [line.split() for line in lines[1:4]] == [
        ["run-a", "train/loss", "step", "0", "1"],
        ["run-a", "train/loss", "step", "1", "0.5"],
        ["run-a", "train/loss", "step", "2", "0.333333"],
    ]
    assert lines[4:] == ["received 3 point(s)"]


def test_client_example_stops_after_its_timeout_without_points(server: StreamServer) -> None:
    proc = run_client(server.url, "--timeout", "0.5")
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "received 0 point(s)"


def test_client_example_exits_1_with_a_hint_when_no_server_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    proc = run_client(f"http://127.0.0.1:{port}")
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 1
    assert out == ""
    assert "lightning-stream ls" in err


@pytest.mark.slow
def test_watch_logdir_script_serves_curls_tails_and_stops_cleanly(registry_dir: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    result = subprocess.run(
        ["bash", str(EXAMPLES / "watch_logdir.sh")], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    health = json.loads(lines[lines.index(next(x for x in lines if x.startswith("--- curl") and "/health" in x)) + 1])
    assert health["status"] == "ok"
    assert health["runs"] == 2
    runs = json.loads(lines[lines.index(next(x for x in lines if x.startswith("--- curl") and "/api/runs" in x)) + 1])
    assert sorted(r["run"] for r in runs) == ["version_0", "version_1"]
    assert all(r["tags"] == ["train/loss", "val/acc"] and r["last_step"] == 49 for r in runs)
    assert "healthy" in lines
    tail = lines[lines.index(next(x for x in lines if x.startswith("--- lightning-stream tail"))) + 1 :][:3]
    assert [line.split()[1:4] for line in tail] == [["version_2", "train/loss", f"step={s}"] for s in range(3)]
    assert lines[-1] == "server stopped cleanly"
    assert list_servers() == []  # the SIGTERM'd server removed its registry entry
    assert not any(registry_dir.glob("*.json"))

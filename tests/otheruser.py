"""A second local user for the shared-machine tests: a forked child that drops to ``nobody``.

The attacks of docs/security.md come from *another* uid on the same machine. Tests run
as root here, so a child ``fork``-ed from the test process can ``setuid`` to ``nobody``
and act as that user (the interpreter under /root is not executable by ``nobody``, so the
child keeps running the test's Python instead of exec-ing a new one). Elsewhere the tests
that need this are skipped with ``needs_root``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="acting as a second local user needs root (setuid to 'nobody')"
)


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _become_nobody() -> None:
    uid, gid = _nobody()
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def as_other_user(func: Callable[[], None]) -> None:
    """Run ``func`` as ``nobody`` in a forked child; raise if it failed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            _become_nobody()
            func()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the second user's step failed (see stderr)"


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A world-writable sticky directory like ``/tmp``, that both users can reach."""
    path = Path(tempfile.mkdtemp(prefix="ls-shared-"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeServer:
    """A server run by ``nobody`` that answers ``/health`` like ours and records what it is sent."""

    def __init__(self, pid: int, port: int, report: int) -> None:
        self.pid = pid
        self.port = port
        self._report = report
        self._seen = b""

    def authorizations(self) -> list[str]:
        """Every ``Authorization`` header the fake server received so far."""
        while select.select([self._report], [], [], 0)[0]:
            chunk = os.read(self._report, 65536)
            if not chunk:
                break
            self._seen += chunk
        return [line for line in self._seen.decode().splitlines() if line]


@contextlib.contextmanager
def fake_server_of_other_user() -> Iterator[FakeServer]:
    """Fork a child that becomes ``nobody`` and serves a lookalike on 127.0.0.1 until the block ends."""
    port_r, port_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.close(port_r)
            os.close(report_r)
            _become_nobody()
            _serve_lookalike(port_w, report_w)
        finally:
            os._exit(0)
    os.close(port_w)
    os.close(report_w)
    try:
        ready, _, _ = select.select([port_r], [], [], 30)
        assert ready, "the second user's fake server did not start"
        port = int(os.read(port_r, 16).decode())
        yield FakeServer(pid, port, report_r)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(port_r)
        os.close(report_r)


def _serve_lookalike(port_w: int, report_w: int) -> None:  # pragma: no cover - runs in the child
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            token = "token=" in self.path
            if auth or token:
                os.write(report_w, f"{auth or self.path}\n".encode())
            if self.path.startswith("/health"):
                body = json.dumps({"status": "ok", "pid": os.getpid(), "seq": 0, "events_total": 0}).encode()
            else:
                body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    os.write(port_w, str(server.server_address[1]).encode())
    os.close(port_w)
    server.serve_forever()

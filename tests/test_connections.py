"""Bounded connections: the client cap (503 + Retry-After), the request-header timeout, descriptor
exhaustion without restarts or log floods (issue 14, docs/security.md)."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lightning_stream.server import StreamServer
from tests.proctools import end_process

posix_only = pytest.mark.skipif(os.name == "nt", reason="RLIMIT_NOFILE is POSIX")
BOUND_S = 30.0  # upper bound of every wait below; none is a timing assertion


def _get(port: int, path: str = "/health") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _wait_closed_by_server(socks: list[socket.socket]) -> list[bytes]:
    """Read each socket until the server closes it; what each received. Fails after ``BOUND_S``."""
    received = {s: b"" for s in socks}
    open_ = set(socks)
    deadline = time.monotonic() + BOUND_S
    while open_:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(open_)} of {len(socks)} connections were never closed by the server"
        readable, _, _ = select.select(list(open_), [], [], remaining)
        for sock in readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[sock] += chunk
            else:
                open_.discard(sock)
    return [received[s] for s in socks]


@pytest.fixture
def silent_sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def _connect_silently(port: int, n: int, into: list[socket.socket]) -> None:
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND_S)
        into.append(sock)


def test_a_client_past_the_cap_gets_503_with_retry_after_and_a_freed_slot_is_reused(
    silent_sockets: list[socket.socket],
) -> None:
    with StreamServer(port=None, registry=False, watchdog_interval_s=0, max_clients=2) as server:
        _connect_silently(server.port, 2, silent_sockets)
        status, headers, body = _get(server.port)
        assert status == 503
        assert headers["Retry-After"].isdigit()
        assert "max_clients" in json.loads(body)["error"]
        silent_sockets.pop().close()
        deadline = time.monotonic() + BOUND_S
        while _get(server.port)[0] != 200:  # the slot frees once the server saw the close
            assert time.monotonic() < deadline, "a freed slot was never reused"


def test_a_silent_or_slow_connection_is_closed_but_a_started_stream_is_not(
    silent_sockets: list[socket.socket],
) -> None:
    with StreamServer(port=None, registry=False, watchdog_interval_s=0, header_timeout_s=0.5) as server:
        stream = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)
        silent_sockets.append(stream)
        stream.sendall(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")
        _connect_silently(server.port, 1, silent_sockets)  # says nothing
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)
        silent_sockets.append(slow)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0")  # slowloris: headers never finish
        assert _wait_closed_by_server(silent_sockets[1:]) == [b"", b""]
        server.publish("run", "loss", 1, 0.5)  # after the timeout: the stream still delivers
        data = b""
        while b'"loss"' not in data:
            chunk = stream.recv(4096)
            assert chunk, "the started stream was closed by the header timeout"
            data += chunk


_SERVE_WITH_FEW_DESCRIPTORS = """
import dataclasses, logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from lightning_stream.config import ServerConfig
from lightning_stream.server import StreamServer
logging.basicConfig(level=logging.WARNING)
known = {f.name for f in dataclasses.fields(ServerConfig)}
wanted = dict(registry=False, watchdog_interval_s=0.2, header_timeout_s=1.0, max_clients=MAX_CLIENTS)
options = {k: v for k, v in wanted.items() if k in known and v is not None}
with StreamServer(port=None, **options) as server:
    print(server.port, flush=True)
    sys.stdin.read()
    print(server.restarts, flush=True)
"""


@posix_only
@pytest.mark.parametrize("max_clients", [None, 1000], ids=["derived-cap", "cap-above-the-limit"])
def test_descriptor_exhaustion_neither_restarts_the_server_nor_floods_the_log(
    max_clients: int | None, silent_sockets: list[socket.socket]
) -> None:
    """``ulimit -n 64`` and 80 silent connections: answered or timed out, then served again.

    With the derived cap (half of 64) the excess gets 503; with a cap above the limit
    ``accept()`` fails with EMFILE, which is logged once, not once a second with a traceback.
    Either way the watchdog sees a live loop and does not restart a server that is only full.
    """
    script = _SERVE_WITH_FEW_DESCRIPTORS.replace("MAX_CLIENTS", repr(max_clients))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stderr is not None
        port = int(proc.stdout.readline())
        _connect_silently(port, 80, silent_sockets)
        answers = _wait_closed_by_server(silent_sockets)
        if max_clients is None:
            refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            assert refused
            assert all(b"Retry-After: " in a for a in refused)
        status, _, body = _get(port)
        assert status == 200, body
        proc.stdin.close()
        restarts = int(proc.stdout.readline())
        assert proc.wait(BOUND_S) == 0
        log = proc.stderr.read()
    finally:
        end_process(proc)
        for stream in (proc.stdin, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
    assert restarts == 0, log
    assert "Traceback" not in log, log
    assert log.count("cannot accept connections") <= 1, log

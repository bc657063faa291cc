"""Binding the listening socket: dynamic ports, busy fixed ports, socket options, re-pick."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_stream.errors import PortInUseError, ServerStartError
from lightning_stream.ports import bind_dynamic, bind_listener, bind_server_socket
from lightning_stream.registry import ServerInfo, write_entry

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX socket semantics")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port held by a plain listening socket (another program, as far as we know)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def _connectable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True


def test_dynamic_port_is_bound_and_read_back_from_the_socket() -> None:
    bound = bind_server_socket("127.0.0.1", None)
    try:
        assert bound.port == bound.sock.getsockname()[1] > 0
        assert bound.requested_port is None
        assert not bound.fell_back
        assert bound.message == ""
        assert _connectable(bound.port)
    finally:
        bound.sock.close()


def test_listener_uses_reuseaddr_and_never_reuseport() -> None:
    sock = bind_listener("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        if hasattr(socket, "SO_REUSEPORT"):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        # ... so a second live listener on the same port is refused, not silently sharing it.
        with pytest.raises(OSError, match="in use") as info:
            bind_listener("127.0.0.1", sock.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
    finally:
        sock.close()


def test_port_with_connections_in_time_wait_can_be_bound_again_at_once() -> None:
    listener = bind_listener("127.0.0.1", 0)
    listener.setblocking(True)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    listener.close()
    again = bind_listener("127.0.0.1", port)
    again.close()


def test_busy_fixed_port_with_strict_port_raises_port_in_use(held_port: int) -> None:
    with pytest.raises(PortInUseError, match=rf"port {held_port} .*held by another process.*port=None") as info:
        bind_server_socket("127.0.0.1", held_port, strict=True)
    assert info.value.port == held_port
    assert info.value.owner_pid is None


def test_busy_fixed_port_error_names_the_registered_holder(held_port: int, tmp_path: Path) -> None:
    write_entry(
        ServerInfo(
            pid=os.getpid(),
            host="127.0.0.1",
            port=held_port,
            url=f"http://127.0.0.1:{held_port}",
            logdirs=(str(tmp_path / "logs"),),
        )
    )
    with pytest.raises(PortInUseError, match=rf"pid {os.getpid()} .*logs") as info:
        bind_server_socket("127.0.0.1", held_port, strict=True)
    assert info.value.owner_pid == os.getpid()


def test_busy_fixed_port_falls_back_to_a_free_port_with_a_warning(
    held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lightning_stream.ports"):
        bound = bind_server_socket("127.0.0.1", held_port)
    try:
        assert bound.fell_back
        assert bound.port != held_port
        assert bound.requested_port == held_port
        assert f"port {held_port}" in bound.message
        assert f"port {bound.port} instead" in bound.message
        assert bound.message in caplog.text
        assert _connectable(bound.port)
    finally:
        bound.sock.close()


def test_address_that_is_not_local_raises_server_start_error() -> None:
    with pytest.raises(ServerStartError, match=r"cannot bind '192\.0\.2\.1'"):
        bind_server_socket("192.0.2.1", None)  # TEST-NET-1: never an address of this machine


def _free_ports(n: int) -> list[int]:
    socks = [bind_listener("127.0.0.1", 0) for _ in range(n)]
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def _port_server(path: str, answers: list[int], served: list[int], done: threading.Event) -> threading.Thread:
    """A real portpicker port server on a unix socket (the PORTSERVER_ADDRESS protocol)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(len(answers))
    server.settimeout(0.1)

    def serve() -> None:
        with server:
            pending = list(answers)
            while pending and not done.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.recv(64)  # "<pid>\n"
                    port = pending.pop(0)
                    served.append(port)  # before answering: the client acts on the answer at once
                    conn.sendall(f"{port}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="port server over a unix socket")
def test_dynamic_pick_taken_before_bind_is_picked_again_via_the_port_server(
    held_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Spare answers: on a shared machine another process may grab a "free" port first.
    answers = [held_port, *_free_ports(4)]
    served: list[int] = []
    done = threading.Event()
    thread = _port_server(str(tmp_path / "portserver.sock"), answers, served, done)
    monkeypatch.setenv("PORTSERVER_ADDRESS", str(tmp_path / "portserver.sock"))
    sock = bind_dynamic("127.0.0.1")
    try:
        assert served[0] == held_port  # the port server was asked first, and its busy pick skipped
        assert len(served) >= 2
        assert sock.getsockname()[1] == served[-1]
    finally:
        sock.close()
        done.set()
        thread.join(5)

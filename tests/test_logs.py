"""No token in any log line or error body (issue 14, docs/security.md)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from apptools import TIMEOUT

from lightning_stream.app import AppState, create_app
from lightning_stream.config import ServerConfig
from lightning_stream.hub import Hub
from lightning_stream.logs import redact
from lightning_stream.looplag import LoopLagMonitor
from lightning_stream.server import StreamServer

TOKEN = "the-secret-token-42"


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /stream?token=" + TOKEN.encode() + b"\x01 HTTP/1.1",  # aiohttp quoted the line, token and all
        b"GET /ws?token=" + TOKEN.encode() + b" HTTP/1.1\r\nContent-Length: x",
    ],
)
def test_a_malformed_request_leaves_its_token_in_no_log_line_and_no_error_body(
    request_line: bytes, caplog: pytest.LogCaptureFixture, registry_dir: Path
) -> None:
    with caplog.at_level(logging.DEBUG), StreamServer(port=None, watchdog_interval_s=0, token=TOKEN) as server:
        answer = _raw(server.port, request_line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        entry = (registry_dir / server.info().filename).read_text()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"].startswith("bad HTTP request: ")
    assert TOKEN.encode() not in answer
    assert TOKEN not in caplog.text
    assert TOKEN not in entry
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # one debug line, no traceback


async def test_an_unexpected_error_logs_the_url_with_its_token_redacted(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(registry=False, watchdog_interval_s=0, token=TOKEN)
    state = AppState(hub=Hub(config), config=config, loop_lag=LoopLagMonitor())
    app = create_app(state)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    app.router.add_get("/boom", boom)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/boom?token={TOKEN}&run=x"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as response:
            assert response.status == 500
            assert TOKEN not in await response.text()
    finally:
        await runner.cleanup()
        await state.hub.close()
    assert "/boom?token=REDACTED&run=x" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("GET /stream?token=abc HTTP/1.1", "GET /stream?token=REDACTED HTTP/1.1"),
        ("/ws?run=a&token=abc&tag=b", "/ws?run=a&token=REDACTED&tag=b"),
        ("b'GET /x?TOKEN=abc\\x01 HTTP/1.1'", "b'GET /x?TOKEN=REDACTED\\x01 HTTP/1.1'"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer REDACTED"),
        ("no secret here", "no secret here"),
    ],
)
def test_redact_hides_token_values_and_keeps_the_rest(text: str, clean: str) -> None:
    assert redact(text) == clean

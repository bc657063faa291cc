"""Host (DNS rebinding), Origin, token and CORS rules, against a real server on loopback."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from apptools import TIMEOUT, RunningApp, batch, ingest, running_app

from lightning_stream.config import ServerConfig
from lightning_stream.security import host_is_loopback, host_name, origin_allowed

TOKEN = "s3cret-token-123"


async def status_of(app: RunningApp, path: str, headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + path, headers=headers, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("127.5.6.7", True),
        ("localhost:1", True),
        ("LOCALHOST.", True),
        ("app.localhost:9", True),
        ("[::1]:8080", True),
        ("[::1]", True),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.1:80", False),
        ("[::ffff:8.8.8.8]:80", False),
        ("", False),
    ],
)
def test_host_header_classification(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


def test_host_name_strips_port_and_brackets() -> None:
    assert host_name("[::1]:8080") == "::1"
    assert host_name("Example.COM.:80") == "example.com"


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:5000", "127.0.0.1:8080", True),  # loopback page on another port
        ("http://localhost:3000", "127.0.0.1:8080", True),
        ("http://box.lan:8080", "box.lan:8080", True),  # the server's own page
        ("http://box.lan:9999", "box.lan:8080", False),
        ("https://evil.example", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("file://", "127.0.0.1:8080", False),
        ("https://dash.example", "127.0.0.1:8080", True),  # configured below
    ],
)
def test_origin_rules(origin: str, host: str, allowed: bool) -> None:
    config = ServerConfig(cors_origins=("https://dash.example",))
    assert origin_allowed(origin, host, config) is allowed


async def test_foreign_host_header_is_refused_when_bound_to_loopback() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", [1]))
        status, body = await status_of(app, "/api/runs", headers={"Host": "evil.example:80"})
        assert status == 421
        assert "DNS rebinding" in body["error"]
        for path in ("/health", "/stream", "/", "/metrics"):
            assert (await status_of(app, path, headers={"Host": "rebind.attacker.test"}))[0] == 421
        assert (await status_of(app, "/api/runs", headers={"Host": f"localhost:{app.port}"}))[0] == 200
        assert (await status_of(app, "/api/runs", headers={"Host": f"[::1]:{app.port}"}))[0] == 200


async def test_websocket_from_a_foreign_origin_is_refused() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(app.url + "/ws", origin="https://evil.example")
        assert info.value.status == 403
        for origin in (f"http://127.0.0.1:{app.port}", "http://localhost:5173", None):
            async with s.ws_connect(app.url + "/ws", origin=origin) as ws:
                await ws.send_json({"op": "ping"})
                assert (await ws.receive_json(timeout=10))["type"] == "pong"


async def test_token_is_required_everywhere_but_health() -> None:
    async with running_app(token=TOKEN) as app:
        ingest(app.hub, batch("r", "loss", [1]))
        for path in ("/api/runs", "/api/scalars?run=r&tag=loss", "/stream", "/", "/metrics", "/api/openapi.json"):
            status, body = await status_of(app, path)
            assert status == 401, path
            assert "Authorization: Bearer TOKEN" in body["error"]
        assert (await status_of(app, "/health"))[0] == 200
        assert (await status_of(app, "/api/runs", headers={"Authorization": "Bearer wrong-token-000"}))[0] == 401
        assert (await status_of(app, "/api/runs", params={"token": TOKEN[:-1]}))[0] == 401
        assert (await status_of(app, "/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        assert (await status_of(app, "/api/runs", params={"token": TOKEN}))[0] == 200
        assert (await status_of(app, "/metrics", headers={"Authorization": f"bearer {TOKEN}"}))[0] == 200


async def test_websocket_needs_the_token_in_the_query_or_header() -> None:
    async with running_app(token=TOKEN) as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(app.url + "/ws")
        assert info.value.status == 401
        async with s.ws_connect(app.url + "/ws", params={"token": TOKEN}) as ws:
            await ws.send_json({"op": "ping"})
            assert (await ws.receive_json(timeout=10))["type"] == "pong"
        async with s.ws_connect(app.url + "/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send_json({"op": "ping"})
            assert (await ws.receive_json(timeout=10))["type"] == "pong"


async def test_cors_headers_only_for_configured_origins() -> None:
    async with running_app(cors_origins=("https://dash.example",)) as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(app.url + "/api/runs", headers={"Origin": "https://dash.example"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://dash.example"
        async with s.get(app.url + "/api/runs", headers={"Origin": "https://other.example"}) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers
        async with s.get(app.url + "/stream", headers={"Origin": "https://dash.example"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://dash.example"
        preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
        async with s.options(app.url + "/api/runs", headers=preflight) as r:
            assert r.status == 204
            assert "Last-Event-ID" in r.headers["Access-Control-Allow-Headers"]
        async with s.options(app.url + "/api/runs", headers={**preflight, "Origin": "https://other.example"}) as r:
            assert r.status == 403


async def test_no_cors_headers_by_default() -> None:
    async with (
        running_app() as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(app.url + "/api/runs", headers={"Origin": "http://127.0.0.1:1"}) as r,
    ):
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


def test_non_loopback_bind_without_token_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="pass token="):
        ServerConfig(host="0.0.0.0")

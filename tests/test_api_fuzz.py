"""Fuzzing: the REST API from its own OpenAPI document (schemathesis), the WS protocol (hypothesis).

One real server on a loopback port runs in a background thread for the module
(schemathesis' calls are synchronous ``requests``). Example counts are bounded
so the module takes seconds; every answer must be documented, well-formed and
never a 5xx, and the WebSocket must stay usable after any message.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import aiohttp
import pytest
import schemathesis
from apptools import TIMEOUT, RunningApp, batch, ingest, running_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_stream.hub import validate_glob
from lightning_stream.openapi import GLOB_PATTERN, openapi_document


class _ServerThread:
    """``running_app()`` on its own loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready: Future[RunningApp] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with running_app() as app:
            ingest(app.hub, batch("train", "loss", range(20)), batch("train/v1", "acc", range(5)))
            app.hub.flush()
            self._ready.set_result(app)
            await self._stop.wait()

    def start(self) -> RunningApp:
        self._thread.start()
        return self._ready.result(timeout=30)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[_ServerThread]:
    thread = _ServerThread()
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def live_url(server: _ServerThread) -> str:
    return str(server.run(_url(server)))


async def _url(server: _ServerThread) -> str:
    return server._ready.result().url


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_rest_api_conforms_to_its_openapi_document(case: schemathesis.Case, live_url: str) -> None:
    if _reversed_window(case.query):  # the one rule between parameters OpenAPI cannot state
        response = case.call(base_url=live_url)
        assert response.status_code == 400, response.text
        return
    response = case.call(base_url=live_url)
    if response.status_code == 400 and LINE_TOO_LONG in response.text:
        # up to 64 tag= globs of 256 characters can pass aiohttp's 8,190-byte request line: its parser
        # answers 400 in text here; the served app (connections.CappedSockSite) answers it in JSON
        return
    case.validate_response(response)


LINE_TOO_LONG = "Got more than 8190 bytes when reading"


def _reversed_window(query: dict[str, Any] | None) -> bool:
    """``/api/series?start_step=A&end_step=B`` with A > B (a 400 that says to swap them)."""
    try:
        return query is not None and int(query["start_step"]) > int(query["end_step"])
    except (KeyError, TypeError, ValueError):
        return False


# -- WebSocket protocol -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
ws_messages = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["subscribe", "unsubscribe", "ping", "SUBSCRIBE", ""])},
        optional={
            "run": json_values | st.text(max_size=40),
            "tag": json_values | st.text(max_size=40),
            "since": st.integers(-5, 2**70) | json_values,
            "format": st.sampled_from(["points", "columns", "rows", ""]) | json_values,
        },
    ).map(json.dumps),
)

VALID_TYPES = {"subscribed", "unsubscribed", "pong", "error", "scalars", "status", "reset"}


async def _exchange(url: str, messages: list[str]) -> list[dict[str, Any]]:
    """Send each message, read until the ping after it is answered; collect every reply."""
    replies: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(url + "/ws") as ws:
        for text in [*messages, json.dumps({"op": "ping"})]:
            await ws.send_str(text)
            await ws.send_str(json.dumps({"op": "ping"}))
            while True:
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, f"connection not usable after {text!r}: {msg}"
                reply = json.loads(msg.data)
                replies.append(reply)
                if reply["type"] == "pong":
                    break
    return replies


@given(messages=st.lists(ws_messages, min_size=1, max_size=5))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_websocket_survives_any_message_sequence(server: _ServerThread, live_url: str, messages: list[str]) -> None:
    replies = server.run(_exchange(live_url, messages))
    for reply in replies:
        assert reply["type"] in VALID_TYPES, reply
        if reply["type"] == "error":
            assert isinstance(reply["message"], str)
            assert reply["message"]
    health = server.run(_health(live_url))
    assert health["status"] == "ok"


async def _health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url + "/health") as r:
        assert r.status == 200
        data = await r.json()
        assert isinstance(data, dict)
        return data


@given(st.text(alphabet="ab![]*?\x01\x7f", max_size=12))
@settings(max_examples=500, deadline=None)
def test_the_documented_glob_pattern_accepts_exactly_what_the_server_accepts(glob: str) -> None:
    try:
        validate_glob(glob)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == (bool(re.fullmatch(GLOB_PATTERN, glob)) and glob != "")

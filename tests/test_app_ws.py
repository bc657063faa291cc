"""``/ws`` on a real loopback port: subscribe/filters/resume, bad messages, size limit, heartbeat, shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from apptools import TIMEOUT, batch, ingest, running_app, until

from lightning_stream.app import WS


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def test_subscribe_acknowledges_then_streams_scalars_with_seq() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_json({"op": "subscribe"})
        assert await receive(ws) == {"type": "subscribed", "run": "*", "tag": "*", "seq": 0, "format": "points"}
        ingest(app.hub, batch("r", "loss", [1]))
        assert await receive(ws) == {
            "type": "scalars",
            "seq": 1,
            "points": [{"run": "r", "tag": "loss", "step": 1, "wall_time": 1001.0, "value": 0.1}],
        }
        app.hub.publish_status("r", "finished")
        assert await receive(ws) == {"type": "status", "seq": 2, "run": "r", "state": "finished"}


async def test_globs_filter_points_and_resubscribe_replaces_the_filter() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_json({"op": "subscribe", "run": "a*", "tag": "loss"})
        await receive(ws)
        ingest(app.hub, batch("a1", "loss", [1]), batch("a1", "acc", [1]), batch("b", "loss", [1]))
        msg = await receive(ws)
        assert [(p["run"], p["tag"]) for p in msg["points"]] == [("a1", "loss")]
        await ws.send_json({"op": "subscribe", "run": "b", "tag": "*"})
        assert (await receive(ws))["type"] == "subscribed"
        ingest(app.hub, batch("a1", "loss", [2]), batch("b", "acc", [2]))
        msg = await receive(ws)
        assert [(p["run"], p["tag"], p["step"]) for p in msg["points"]] == [("b", "acc", 2)]


async def test_since_replays_missed_batches_exactly_once() -> None:
    async with running_app() as app:
        for step in range(10):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "since": 4})
            assert (await receive(ws))["seq"] == 10
            got = [(await receive(ws)) for _ in range(6)]
            assert [m["seq"] for m in got] == [5, 6, 7, 8, 9, 10]
            assert [m["points"][0]["step"] for m in got] == [4, 5, 6, 7, 8, 9]
            await ws.send_json({"op": "ping"})
            assert await receive(ws) == {"type": "pong", "seq": 10}  # nothing more was queued


async def test_since_older_than_the_buffer_gets_a_reset_with_the_current_seq() -> None:
    async with running_app(replay_points=5) as app:
        for step in range(20):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "since": 1})
            await receive(ws)
            reset = await receive(ws)
    assert reset["type"] == "reset"
    assert reset["seq"] == 20
    assert "re-read" in reset["reason"]


async def test_unsubscribe_stops_delivery_and_ping_answers() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_json({"op": "subscribe"})
        await receive(ws)
        await ws.send_json({"op": "unsubscribe"})
        assert await receive(ws) == {"type": "unsubscribed"}
        ingest(app.hub, batch("r", "loss", [1]))
        app.hub.flush()
        await ws.send_json({"op": "ping"})
        assert await receive(ws) == {"type": "pong", "seq": 1}  # and no scalars before it


BAD_MESSAGES = [
    ("hello", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('"subscribe"', "expected a JSON object"),
    ("{}", "unknown op None"),
    ('{"op": "publish"}', "unknown op 'publish'"),
    ('{"op": "subscribe", "run": 5}', "run=5 must be a string"),
    ('{"op": "subscribe", "tag": "[abc"}', "unclosed '['"),
    ('{"op": "subscribe", "tag": ""}', "tag is empty"),
    ('{"op": "subscribe", "since": -1}', "since=-1 is out of range"),
    ('{"op": "subscribe", "since": "x"}', "since='x' must be an integer"),
    ('{"op": "subscribe", "since": 1.5}', "since=1.5 must be an integer"),
    ('{"op": "subscribe", "since": true}', "not a boolean"),
    ('{"op": "subscribe", "runs": "*"}', "unknown field(s) ['runs']"),
    ("[" * 10_000, "nested too deeply"),  # RecursionError closed the connection with 1001 and a traceback
    ('{"op": ' * 5_000, "nested too deeply"),
    ('{"op": "subscribe", "since": "' + "[" * 100 + '"}', "must be an integer"),  # brackets in a string: no depth
]


@pytest.mark.parametrize(("text", "fragment"), BAD_MESSAGES)
async def test_bad_message_gets_an_error_and_the_connection_stays_usable(text: str, fragment: str) -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_str(text)
        error = await receive(ws)
        assert error["type"] == "error"
        assert fragment in error["message"]
        await ws.send_json({"op": "subscribe"})
        assert (await receive(ws))["type"] == "subscribed"


async def test_binary_frame_gets_an_error() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_bytes(b"\x00\x01")
        assert "binary frames" in (await receive(ws))["message"]
        await ws.send_json({"op": "ping"})
        assert (await receive(ws))["type"] == "pong"


async def test_oversized_message_closes_with_1009() -> None:
    async with running_app(ws_max_msg_size=2048) as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.ws_connect(app.url + "/ws") as ws:
            await ws.send_str(json.dumps({"op": "subscribe", "run": "x" * 4096}))
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.CLOSE
            assert msg.data == WSCloseCode.MESSAGE_TOO_BIG
        async with s.get(app.url + "/health") as r:  # the server carries on
            assert r.status == 200


async def test_plain_get_on_ws_route_is_400_json() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + "/ws") as r:
        assert r.status == 400
        assert "WebSocket endpoint" in (await r.json())["error"]


async def test_server_pings_idle_clients() -> None:
    async with (
        running_app(keepalive_s=0.2) as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.ws_connect(app.url + "/ws", autoping=False) as ws,
    ):
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.PING


async def test_shutdown_closes_websockets_with_going_away() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await ws.send_json({"op": "subscribe"})
        await receive(ws)
        cleanup = asyncio.create_task(app.runner.cleanup())
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == WSCloseCode.GOING_AWAY
        await asyncio.wait_for(cleanup, 10)


async def test_closed_connections_are_forgotten() -> None:
    async with running_app() as app:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for _ in range(3):
                async with s.ws_connect(app.url + "/ws") as ws:
                    await ws.send_json({"op": "subscribe"})
                    await receive(ws)
                    assert app.app[WS].count == 1
        await until(lambda: app.app[WS].count == 0 and app.hub.stats()["subscribers"] == 0)


async def test_hub_closing_under_a_connection_closes_it_with_going_away() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        await app.hub.close()
        await ws.send_json({"op": "subscribe"})
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == WSCloseCode.GOING_AWAY

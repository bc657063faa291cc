"""``format=columns`` on ``/stream`` and ``/ws``: exact bytes, same ids/resume/reset as point objects, one encoding."""

from __future__ import annotations

import json
import math

import aiohttp
import pytest
from aiohttp import WSMsgType
from apptools import TIMEOUT, RawSSE, batch, ingest, running_app, until

from lightning_stream.app import SSE
from lightning_stream.config import ServerConfig
from lightning_stream.hub import Hub

COLUMNS_1 = (
    b'{"series":[{"run":"r","tag":"loss","steps":[1,2],"wall_times":[1001.0,1002.0],"values":[0.1,0.2]},'
    b'{"run":"r","tag":"acc","steps":[1],"wall_times":[1001.0],"values":[0.5]}]}'
)


async def test_sse_columns_frames_are_exact_bytes_and_status_frames_unchanged() -> None:
    async with running_app() as app:
        raw = await RawSSE.open(app, "/stream?format=columns")
        try:
            assert raw.status == 200
            assert await raw.read_until(b"\n\n") == b"retry: 2000\n\n"
            ingest(app.hub, batch("r", "loss", [1, 2]), batch("r", "acc", [1], value=0.5))
            assert await raw.read_until(b"\n\n") == b"id: 1\nevent: scalars\ndata: " + COLUMNS_1 + b"\n\n"
            app.hub.publish_status("r", "epoch", epoch=3)
            assert await raw.read_until(b"\n\n") == (
                b'id: 2\nevent: status\ndata: {"run":"r","state":"epoch","epoch":3}\n\n'
            )
            ingest(app.hub, batch("r", "loss", [3], value=math.nan))
            assert await raw.read_until(b"\n\n") == (
                b"id: 3\nevent: scalars\ndata: "
                b'{"series":[{"run":"r","tag":"loss","steps":[3],"wall_times":[1003.0],"values":["NaN"]}]}\n\n'
            )
        finally:
            await raw.close()


async def test_sse_columns_keep_the_filter_and_default_points_clients_see_the_same_ids() -> None:
    async with running_app() as app:
        columns = await RawSSE.open(app, "/stream?format=columns&tag=acc")
        points = await RawSSE.open(app, "/stream?format=points&tag=acc")
        default = await RawSSE.open(app, "/stream?tag=acc")
        try:
            for raw in (columns, points, default):
                await raw.read_until(b"retry: 2000\n\n")
            ingest(app.hub, batch("r", "loss", [1, 2]), batch("r", "acc", [1], value=0.5))
            assert await columns.read_until(b"\n\n") == (
                b"id: 1\nevent: scalars\ndata: "
                b'{"series":[{"run":"r","tag":"acc","steps":[1],"wall_times":[1001.0],"values":[0.5]}]}\n\n'
            )
            expected_points = (
                b"id: 1\nevent: scalars\ndata: "
                b'{"points":[{"run":"r","tag":"acc","step":1,"wall_time":1001.0,"value":0.5}]}\n\n'
            )
            assert await points.read_until(b"\n\n") == expected_points
            assert await default.read_until(b"\n\n") == expected_points
        finally:
            for raw in (columns, points, default):
                await raw.close()


async def test_each_filter_and_format_frame_is_encoded_once_for_all_its_clients() -> None:
    async with running_app() as app:
        clients = [await RawSSE.open(app, path) for path in ["/stream?format=columns"] * 3 + ["/stream"] * 3]
        try:
            for raw in clients:
                await raw.read_until(b"retry: 2000\n\n")
            await until(lambda: app.hub.stats()["subscribers"]["sse"] == 6)
            ingest(app.hub, batch("r", "loss", [1, 2]), batch("r", "acc", [1], value=0.5))
            frames = [await raw.read_until(b"\n\n") for raw in clients]
        finally:
            for raw in clients:
                await raw.close()
        assert frames[0] == b"id: 1\nevent: scalars\ndata: " + COLUMNS_1 + b"\n\n"
        assert len(set(frames[:3])) == 1
        assert len(set(frames[3:])) == 1
        cache = app.app[SSE]._frames._frames
        assert sorted(key for key in cache if key[0] == 1) == [
            (1, "scalars", "*", "*", "columns"),
            (1, "scalars", "*", "*", "points"),
        ]
        message = app.hub._log[-1]
        assert sorted(message._cache) == [("*", "*", "columns"), ("*", "*", "points")]


async def test_sse_resume_in_columns_replays_exactly_what_was_missed() -> None:
    async with running_app() as app:
        for step in range(5):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        raw = await RawSSE.open(app, "/stream?format=columns", headers={"Last-Event-ID": "3"})
        try:
            await raw.read_until(b"retry: 2000\n\n")
            replayed = [await raw.read_until(b"\n\n") for _ in range(2)]
            ingest(app.hub, batch("r", "loss", [5]))
            live = await raw.read_until(b"\n\n")
        finally:
            await raw.close()
    assert replayed == [
        b'id: 4\nevent: scalars\ndata: {"series":[{"run":"r","tag":"loss","steps":[3],"wall_times":[1003.0],'
        b'"values":[0.3]}]}\n\n',
        b'id: 5\nevent: scalars\ndata: {"series":[{"run":"r","tag":"loss","steps":[4],"wall_times":[1004.0],'
        b'"values":[0.4]}]}\n\n',
    ]
    assert live == (
        b'id: 6\nevent: scalars\ndata: {"series":[{"run":"r","tag":"loss","steps":[5],"wall_times":[1005.0],'
        b'"values":[0.5]}]}\n\n'
    )


async def test_sse_resume_too_old_in_columns_gets_the_same_reset() -> None:
    async with running_app(replay_points=10) as app:
        for step in range(40):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        clients = [
            await RawSSE.open(app, p, headers={"Last-Event-ID": "2"}) for p in ("/stream?format=columns", "/stream")
        ]
        try:
            for raw in clients:
                await raw.read_until(b"retry: 2000\n\n")
            frames = [await raw.read_until(b"\n\n") for raw in clients]
            ingest(app.hub, batch("r", "loss", [40]))
            after = await clients[0].read_until(b"\n\n")  # after the reset, delivery goes on in columns
        finally:
            for raw in clients:
                await raw.close()
    assert frames[0] == frames[1]
    assert frames[0].startswith(b"id: 40\nevent: reset\ndata: {")
    assert b"no longer held" in frames[0]
    assert after == (
        b'id: 41\nevent: scalars\ndata: {"series":[{"run":"r","tag":"loss","steps":[40],"wall_times":[1040.0],'
        b'"values":[4.0]}]}\n\n'
    )


@pytest.mark.parametrize("value", ["xml", "COLUMNS", ""])
async def test_unknown_stream_format_is_400_saying_what_to_use(value: str) -> None:
    async with (
        running_app() as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(app.url + "/stream", params={"format": value}) as r,
    ):
        assert r.status == 400
        error = (await r.json())["error"]
    assert f"format={value!r} is not known; use format=columns" in error
    assert "format=points" in error


async def test_ws_columns_messages_are_exact_text_while_points_stay_the_default() -> None:
    async with (
        running_app() as app,
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.ws_connect(app.url + "/ws") as ws,
        s.ws_connect(app.url + "/ws") as default,
    ):
        await ws.send_json({"op": "subscribe", "format": "columns"})
        assert (await ws.receive(timeout=10)).data == (
            '{"type": "subscribed", "run": "*", "tag": "*", "seq": 0, "format": "columns"}'
        )
        await default.send_json({"op": "subscribe", "tag": "acc"})
        assert (await default.receive(timeout=10)).data == (
            '{"type": "subscribed", "run": "*", "tag": "acc", "seq": 0, "format": "points"}'
        )
        ingest(app.hub, batch("r", "loss", [1, 2]), batch("r", "acc", [1], value=0.5))
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.TEXT
        assert msg.data == '{"type":"scalars","seq":1,' + COLUMNS_1.decode()[1:]
        assert (await default.receive(timeout=10)).data == (
            '{"type":"scalars","seq":1,"points":[{"run":"r","tag":"acc","step":1,"wall_time":1001.0,"value":0.5}]}'
        )
        app.hub.publish_status("r", "finished")
        status = '{"type":"status","seq":2,"run":"r","state":"finished"}'
        assert (await ws.receive(timeout=10)).data == status
        assert (await default.receive(timeout=10)).data == status


async def test_ws_since_in_columns_replays_then_streams() -> None:
    async with running_app() as app:
        for step in range(4):
            ingest(app.hub, batch("r", "loss", [step]))
            app.hub.flush()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "since": 2, "format": "columns"})
            assert json.loads((await ws.receive(timeout=10)).data)["format"] == "columns"
            got = [json.loads((await ws.receive(timeout=10)).data) for _ in range(2)]
    assert got == [
        {
            "type": "scalars",
            "seq": 3,
            "series": [{"run": "r", "tag": "loss", "steps": [2], "wall_times": [1002.0], "values": [0.2]}],
        },
        {
            "type": "scalars",
            "seq": 4,
            "series": [{"run": "r", "tag": "loss", "steps": [3], "wall_times": [1003.0], "values": [0.3]}],
        },
    ]


async def test_ws_unknown_format_is_an_error_and_the_connection_stays_usable() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
        for bad in ("rows", 3, None):
            await ws.send_json({"op": "subscribe", "format": bad})
            reply = json.loads((await ws.receive(timeout=10)).data)
            if bad is None:  # null means absent: the default
                assert reply["format"] == "points"
                continue
            assert reply["type"] == "error"
            assert f"format={bad!r} is not known; use format=columns" in reply["message"]
        await ws.send_json({"op": "subscribe", "format": "columns"})
        assert json.loads((await ws.receive(timeout=10)).data)["format"] == "columns"
        ingest(app.hub, batch("r", "loss", [1]))
        assert "series" in json.loads((await ws.receive(timeout=10)).data)


def test_hub_columns_payload_has_one_entry_per_series_and_string_non_finites() -> None:
    hub = Hub(ServerConfig(registry=False))
    sub = hub.subscribe(format="columns")
    ingest(hub, batch("r", "loss", [1]), batch("r", "loss", [2], value=math.inf), batch("r", "acc", [1]))
    hub.flush()
    msg = sub.get_nowait()
    assert msg is not None
    assert msg.json_for(sub) == (
        '{"series":[{"run":"r","tag":"loss","steps":[1,2],"wall_times":[1001.0,1002.0],"values":[0.1,"Infinity"]},'
        '{"run":"r","tag":"acc","steps":[1],"wall_times":[1001.0],"values":[0.1]}]}'
    )
    assert msg.points_for(sub) == 3
    with pytest.raises(ValueError, match="format='rows' is not known"):
        hub.subscribe(format="rows")

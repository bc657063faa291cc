"""``GET /api/series`` on a real loopback server: columnar JSON, windows, max_points, streamed CSV, errors, auth."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from array import array
from typing import Any

import aiohttp
import pytest
from apptools import TIMEOUT, RunningApp, batch, ingest, running_app

from lightning_stream.hub import Hub
from lightning_stream.seriesapi import MAX_TAGS
from lightning_stream.wire import CSV_ROWS_PER_CHUNK, SERIES_CHUNK_BYTES

TOKEN = "s3cret-token-123"


async def fetch(
    app: RunningApp, params: dict[str, str] | list[tuple[str, str]] | None = None, **kw: Any
) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(app.url + "/api/series", params=params or {}, **kw) as r,
    ):
        return r.status, await r.text(), r.headers


async def series(app: RunningApp, **params: str) -> dict[str, Any]:
    status, text, headers = await fetch(app, params)
    assert status == 200, text
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(text)
    assert isinstance(body, dict)
    return body


def two_runs(hub: Hub) -> None:
    ingest(
        hub,
        batch("a", "loss", [1, 2, 3]),
        batch("a", "acc", [2]),
        batch("b/v0", "loss", [5, 6]),
    )


async def test_all_series_come_in_one_exact_columnar_body_sorted_by_run_and_tag() -> None:
    async with running_app() as app:
        two_runs(app.hub)
        status, text, headers = await fetch(app)
        seq = app.hub.seq
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert seq > 0  # queued points were flushed into seqs before answering
    assert text == (
        f'{{"seq":{seq},"series":['
        '{"run":"a","tag":"acc","steps":[2],"wall_times":[1002.0],"values":[0.2],"decimated":false},'
        '{"run":"a","tag":"loss","steps":[1,2,3],"wall_times":[1001.0,1002.0,1003.0],'
        '"values":[0.1,0.2,0.3],"decimated":false},'
        '{"run":"b/v0","tag":"loss","steps":[5,6],"wall_times":[1005.0,1006.0],"values":[0.5,0.6],'
        '"decimated":false}]}'
    )


async def test_globs_filter_runs_and_tags_as_on_the_stream() -> None:
    async with running_app() as app:
        two_runs(app.hub)
        by_tag = await series(app, tag="loss")
        by_run = await series(app, run="b*")
        star_crosses_slash = await series(app, run="*0", tag="l?ss")
        nothing = await series(app, run="zzz*")
        exact_tag_under_a_glob = await series(app, run="*", tag="acc")
    assert [(s["run"], s["tag"]) for s in by_tag["series"]] == [("a", "loss"), ("b/v0", "loss")]
    assert [(s["run"], s["tag"]) for s in by_run["series"]] == [("b/v0", "loss")]
    assert [(s["run"], s["tag"]) for s in star_crosses_slash["series"]] == [("b/v0", "loss")]
    assert nothing["series"] == []
    assert [(s["run"], s["tag"]) for s in exact_tag_under_a_glob["series"]] == [("a", "acc")]


async def test_an_exact_unknown_run_or_tag_is_404_listing_what_exists() -> None:
    async with running_app() as app:
        two_runs(app.hub)
        s1, run404, _ = await fetch(app, {"run": "nope"})
        s2, tag404, _ = await fetch(app, {"run": "a", "tag": "nope"})
        s3, csv404, _ = await fetch(app, {"run": "nope", "format": "csv"})
    assert (s1, s2, s3) == (404, 404, 404)
    assert "unknown run 'nope'" in json.loads(run404)["error"]
    assert "'b/v0'" in json.loads(run404)["error"]
    assert "unknown tag 'nope' in run 'a'" in json.loads(tag404)["error"]
    assert "'acc', 'loss'" in json.loads(tag404)["error"]
    assert "unknown run 'nope'" in json.loads(csv404)["error"]


async def test_repeated_tag_selects_the_union_once_each_sorted_in_json_and_csv() -> None:
    async with running_app() as app:
        two_runs(app.hub)
        ingest(app.hub, batch("b/v0", "acc", [7]))
        status, text, _ = await fetch(app, [("tag", "loss"), ("tag", "a*"), ("tag", "l?ss")])
        _, csv_text, _ = await fetch(app, [("tag", "acc"), ("tag", "loss"), ("run", "b*"), ("format", "csv")])
    assert status == 200
    pairs = [(s["run"], s["tag"]) for s in json.loads(text)["series"]]
    assert pairs == [("a", "acc"), ("a", "loss"), ("b/v0", "acc"), ("b/v0", "loss")]  # no pair twice
    assert [row[:3] for row in csv.reader(io.StringIO(csv_text))][1:] == [
        ["b/v0", "acc", "7"],
        ["b/v0", "loss", "5"],
        ["b/v0", "loss", "6"],
    ]


async def test_repeated_tag_keeps_the_rules_of_one_bad_globs_unknown_exact_tags_and_a_limit() -> None:
    async with running_app() as app:
        two_runs(app.hub)
        s1, bad, _ = await fetch(app, [("tag", "loss"), ("tag", "[abc")])
        s2, empty, _ = await fetch(app, [("tag", "loss"), ("tag", "")])
        s3, unknown, _ = await fetch(app, [("run", "a"), ("tag", "loss"), ("tag", "nope")])
        many = [("tag", f"t{i}") for i in range(MAX_TAGS + 1)]
        s4, too_many, _ = await fetch(app, many)
        s5, at_limit, _ = await fetch(app, many[:MAX_TAGS])
    assert (s1, s2, s3, s4, s5) == (400, 400, 404, 400, 200)
    assert "unclosed '['" in json.loads(bad)["error"]
    assert "tag is empty" in json.loads(empty)["error"]
    assert "unknown tag 'nope' in run 'a'" in json.loads(unknown)["error"]
    assert json.loads(too_many)["error"].startswith(
        f"{MAX_TAGS + 1} tag= parameters; /api/series takes at most {MAX_TAGS}"
    )
    assert json.loads(at_limit)["series"] == []


async def test_the_step_window_is_inclusive_at_both_ends() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(0, 20, 2)))
        both = await series(app, start_step="4", end_step="10")
        between = await series(app, start_step="3", end_step="5")
        from_ = await series(app, start_step="15")
        to = await series(app, end_step="2")
        empty = await series(app, start_step="100")
        one = await series(app, start_step="8", end_step="8")
    assert both["series"][0]["steps"] == [4, 6, 8, 10]
    assert both["series"][0]["values"] == [0.4, 0.6, 0.8, 1.0]
    assert between["series"][0]["steps"] == [4]
    assert from_["series"][0]["steps"] == [16, 18]
    assert to["series"][0]["steps"] == [0, 2]
    assert empty["series"][0] == {
        "run": "r",
        "tag": "loss",
        "steps": [],
        "wall_times": [],
        "values": [],
        "decimated": False,
    }
    assert one["series"][0]["steps"] == [8]


async def test_max_points_decimates_each_series_keeping_ends_and_extremes() -> None:
    async with running_app() as app:
        values = [math.sin(i / 40) for i in range(5000)]
        values[1234] = 1e4  # one spike that must not disappear
        values[3000] = -1e4
        big = batch("r", "loss", range(5000))
        big.values = array("d", values)
        ingest(app.hub, big, batch("r", "small", range(10)))
        body = await series(app, max_points="50", start_step="100", end_step="4899")
    loss, small = {s["tag"]: s for s in body["series"]}["loss"], {s["tag"]: s for s in body["series"]}["small"]
    assert loss["decimated"] is True
    assert len(loss["steps"]) <= 50
    assert (loss["steps"][0], loss["steps"][-1]) == (100, 4899)
    assert 1234 in loss["steps"]
    assert 3000 in loss["steps"]
    assert max(loss["values"]) == 1e4
    assert min(loss["values"]) == -1e4
    assert len(loss["steps"]) == len(loss["wall_times"]) == len(loss["values"])
    assert loss["wall_times"][loss["steps"].index(1234)] == 1000.0 + 1234
    assert small == {"run": "r", "tag": "small", "steps": [], "wall_times": [], "values": [], "decimated": False}


async def test_nan_and_infinity_are_the_strings_the_other_routes_send() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "x", [1, 2, 3]))
        ingest(app.hub, batch("r", "x", [4], value=math.nan), batch("r", "x", [5], value=-math.inf))
        ingest(app.hub, batch("r", "x", [6], value=math.inf))
        status, text, _ = await fetch(app, {"run": "r", "start_step": "3"})
    assert status == 200
    assert text.endswith(
        '"series":[{"run":"r","tag":"x","steps":[3,4,5,6],"wall_times":[1003.0,1004.0,1005.0,1006.0],'
        '"values":[0.3,"NaN","-Infinity","Infinity"],"decimated":false}]}'
    )


async def test_csv_has_a_header_and_exact_rows_quoting_names_that_need_it() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("a,b", 'say "hi"', [1, 2]), batch("r", "x", [3], value=math.nan))
        ingest(app.hub, batch("r", "x", [4], value=-math.inf))
        status, text, headers = await fetch(app, {"format": "csv"})
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Transfer-Encoding"] == "chunked"
    assert text == (
        "run,tag,step,wall_time,value\n"
        '"a,b","say ""hi""",1,1001.0,0.1\n'
        '"a,b","say ""hi""",2,1002.0,0.2\n'
        "r,x,3,1003.0,NaN\n"
        "r,x,4,1004.0,-Infinity\n"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0] == {"run": "a,b", "tag": 'say "hi"', "step": "1", "wall_time": "1001.0", "value": "0.1"}
    assert math.isnan(float(rows[2]["value"]))
    assert float(rows[3]["value"]) == -math.inf


async def test_csv_honours_window_and_max_points_like_json() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(1000)), batch("r", "acc", range(3)))
        params = {"run": "r", "tag": "loss", "start_step": "10", "end_step": "989", "max_points": "20"}
        as_json = await series(app, **params)
        status, text, _ = await fetch(app, {**params, "format": "csv"})
    assert status == 200
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["run", "tag", "step", "wall_time", "value"]
    (only,) = as_json["series"]
    assert [int(r[2]) for r in rows[1:]] == only["steps"]
    assert [float(r[3]) for r in rows[1:]] == only["wall_times"]
    assert [float(r[4]) for r in rows[1:]] == only["values"]


async def http_chunks(app: RunningApp, query: str) -> tuple[bytes, list[bytes]]:
    """(head, chunks) of ``GET /api/series?query`` read off the socket: each HTTP chunk as the server wrote it."""
    reader, writer = await asyncio.open_connection(app.host, app.port)
    request = f"GET /api/series?{query} HTTP/1.1\r\nHost: {app.host_header}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    chunks = []
    while True:
        size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).split(b";")[0], 16)
        chunks.append((await reader.readexactly(size + 2))[:-2])
        if size == 0:
            break
    writer.close()
    return head, chunks


async def test_csv_is_streamed_in_chunks_not_built_whole() -> None:
    n = 3 * CSV_ROWS_PER_CHUNK + 5
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(n)))
        head, chunks = await http_chunks(app, "format=csv")
    assert b"Transfer-Encoding: chunked" in head
    rows_per_chunk = [c.count(b"\n") for c in chunks if c]
    assert rows_per_chunk == [1, CSV_ROWS_PER_CHUNK, CSV_ROWS_PER_CHUNK, CSV_ROWS_PER_CHUNK, 5]
    text = b"".join(chunks).decode()
    steps = [int(row["step"]) for row in csv.DictReader(io.StringIO(text))]
    assert steps == list(range(n))


async def test_json_is_written_in_chunks_of_whole_series_small_ones_gathered() -> None:
    """Many short series go out in one write (not one each), a big one ends its chunk: few large writes."""
    big = SERIES_CHUNK_BYTES // 8  # points: over SERIES_CHUNK_BYTES of text
    async with running_app() as app:
        ingest(app.hub, *(batch("a", f"t{i:03d}", [1, 2, 3]) for i in range(300)), batch("b", "big", range(big)))
        ingest(app.hub, batch("c", "last", [7]))
        _, chunks = await http_chunks(app, "")
    body = json.loads(b"".join(chunks))
    assert [len(s["steps"]) for s in body["series"]] == [3] * 300 + [big, 1]
    assert chunks[0].startswith(b'{"seq":')
    assert chunks[0].endswith(b'"decimated":false}')
    last = b',{"run":"c","tag":"last","steps":[7],"wall_times":[1007.0],"values":[0.7],"decimated":false}]}'
    assert chunks[1:] == [last, b""]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"start_step": "abc"}, "start_step='abc' must be an integer"),
        ({"end_step": "1.5"}, "end_step='1.5' must be an integer"),
        ({"start_step": "99999999999999999999999"}, "start_step"),
        ({"start_step": "5", "end_step": "4"}, "start_step=5 is after end_step=4"),
        ({"max_points": "1"}, "max_points=1 is out of range; use an integer in [2, "),
        ({"max_points": "0"}, "max_points=0 is out of range"),
        ({"max_points": str(10**9)}, "out of range"),
        ({"max_points": "many"}, "max_points='many'"),
        ({"format": "xml"}, "format='xml' is not known; use format=json (default) or format=csv"),
        ({"run": ""}, "run is empty"),
        ({"tag": "[abc"}, "unclosed '['"),
        ({"max_point": "10"}, "unknown parameter(s) ['max_point']"),
    ],
)
async def test_malformed_series_query_is_400_saying_what_to_fix(params: dict[str, str], fragment: str) -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", [1]))
        status, text, headers = await fetch(app, params)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert fragment in json.loads(text)["error"]


async def test_series_needs_the_token_like_every_api_route() -> None:
    async with running_app(token=TOKEN) as app:
        ingest(app.hub, batch("r", "loss", [1]))
        none, _, _ = await fetch(app)
        wrong, _, _ = await fetch(app, headers={"Authorization": "Bearer wrong-token-000"})
        csv_none, _, _ = await fetch(app, {"format": "csv"})
        bearer, _, _ = await fetch(app, headers={"Authorization": f"Bearer {TOKEN}"})
        query, text, _ = await fetch(app, {"format": "csv", "token": TOKEN})
    assert (none, wrong, csv_none) == (401, 401, 401)
    assert (bearer, query) == (200, 200)
    assert text == "run,tag,step,wall_time,value\nr,loss,1,1001.0,0.1\n"


async def test_csv_download_carries_cors_headers_for_allowed_origins() -> None:
    async with running_app(cors_origins=("https://dash.example",)) as app:
        ingest(app.hub, batch("r", "loss", [1]))
        _, _, allowed = await fetch(app, {"format": "csv"}, headers={"Origin": "https://dash.example"})
        _, _, foreign = await fetch(app, {"format": "csv"}, headers={"Origin": "https://evil.example"})
    assert allowed["Access-Control-Allow-Origin"] == "https://dash.example"
    assert "Access-Control-Allow-Origin" not in foreign


async def test_load_with_series_then_subscribe_since_seq_misses_nothing() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(5)))
        body = await series(app)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "since": body["seq"]})
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            ingest(app.hub, batch("r", "loss", range(5, 8)))
            live = await ws.receive_json(timeout=10)
    assert body["series"][0]["steps"] == [0, 1, 2, 3, 4]
    assert [p["step"] for p in live["points"]] == [5, 6, 7]


async def test_openapi_document_describes_series() -> None:
    async with running_app() as app:
        status, _, _ = await fetch(app)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + "/api/openapi.json") as r:
            doc = await r.json()
    assert status == 200
    op = doc["paths"]["/api/series"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"run", "tag", "start_step", "end_step", "max_points", "format"}
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert set(op["responses"]) == {"200", "400", "404"}

"""REST routes of the app on a real loopback port: /health, /api/runs, /api/scalars, /metrics, /, openapi."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from typing import Any

import aiohttp
import pytest
from apptools import TIMEOUT, batch, ingest, running_app, wait_for_seq
from prometheus_client.parser import text_string_to_metric_families

from lightning_stream._version import __version__
from lightning_stream.app import STATIC_DIR
from lightning_stream.indexpage import BOOT_ELEMENT, EMBED_POINTS, EMBED_SERIES_POINTS, first_tag


async def get(url: str, **kw: object) -> tuple[int, object, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        text = await r.text()
        body = json.loads(text) if r.content_type == "application/json" else text
        return r.status, body, r.headers


async def test_health_reports_version_pid_clients_and_loop_lag() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(5)))
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(app.url + "/stream") as sse:
            assert sse.status == 200
            status, body, _ = await get(app.url + "/health")
    assert status == 200
    assert isinstance(body, dict)
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["pid"] == os.getpid()
    assert body["runs"] == 1
    assert body["clients"] == {"sse": 1, "ws": 0}
    assert body["events_total"] == 5
    assert isinstance(body["loop_lag_ms"], float)
    assert body["loop_lag_ms"] >= 0


async def test_loop_lag_shows_a_blocked_loop() -> None:
    async with running_app() as app:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # noqa: ASYNC251 - block the loop on purpose, as a misbehaving handler would
        await asyncio.sleep(0.12)
        _, body, _ = await get(app.url + "/health")
    assert isinstance(body, dict)
    assert body["loop_lag_ms"] >= 200


async def test_runs_lists_each_run_with_tags_and_last_step() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("a", "loss", [1, 2, 3]), batch("a", "acc", [1]), batch("b/v0", "loss", [7]))
        status, body, _ = await get(app.url + "/api/runs")
    assert status == 200
    assert isinstance(body, list)
    by_run = {r["run"]: r for r in body}
    assert set(by_run) == {"a", "b/v0"}
    assert by_run["a"]["tags"] == ["acc", "loss"]
    assert by_run["a"]["last_step"] == 3
    assert by_run["b/v0"]["last_wall_time"] == 1007.0


async def test_scalars_returns_points_in_step_order_with_the_hub_seq() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", [3, 1, 2]))  # a step going back purges; see series.py
        ingest(app.hub, batch("r", "loss", [3, 4]))
        status, body, _ = await get(app.url + "/api/scalars", params={"run": "r", "tag": "loss"})
        assert isinstance(body, dict)
        assert body["seq"] == app.hub.seq  # queued points were flushed into seqs before answering
    assert status == 200
    assert (body["run"], body["tag"]) == ("r", "loss")
    steps = [p[0] for p in body["points"]]
    assert steps == sorted(steps)
    assert body["points"][-1] == [4, 1004.0, 0.4]


async def test_scalars_since_step_and_limit_select_points() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(10)))
        _, body, _ = await get(
            app.url + "/api/scalars", params={"run": "r", "tag": "loss", "since_step": "4", "limit": "3"}
        )
    assert isinstance(body, dict)
    assert [p[0] for p in body["points"]] == [5, 6, 7]


async def test_scalars_encode_nan_and_infinity_as_tensorboard_strings() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "nan", [1], value=math.nan), batch("r", "inf", [1], value=-math.inf))
        _, nan, _ = await get(app.url + "/api/scalars", params={"run": "r", "tag": "nan"})
        _, inf, _ = await get(app.url + "/api/scalars", params={"run": "r", "tag": "inf"})
    assert isinstance(nan, dict)
    assert isinstance(inf, dict)
    assert nan["points"] == [[1, 1001.0, "NaN"]]
    assert inf["points"] == [[1, 1001.0, "-Infinity"]]


async def test_history_then_subscribe_since_seq_loses_and_repeats_nothing() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(0, 50)))
        _, body, _ = await get(app.url + "/api/scalars", params={"run": "r", "tag": "loss"})
        assert isinstance(body, dict)
        seen = [p[0] for p in body["points"]]
        ingest(app.hub, batch("r", "loss", range(50, 60)))
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as s,
            s.ws_connect(app.url + "/ws") as ws,
        ):
            await ws.send_json({"op": "subscribe", "since": body["seq"]})
            assert (await ws.receive_json())["type"] == "subscribed"
            while len(seen) < 60:
                msg = await ws.receive_json(timeout=10)
                assert msg["type"] == "scalars"
                seen += [p["step"] for p in msg["points"]]
    assert seen == list(range(60))


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"tag": "loss"}, "missing run"),
        ({"run": "r"}, "missing tag"),
        ({"run": "", "tag": "loss"}, "run=''"),
        ({"run": "r", "tag": "loss", "since_step": "abc"}, "since_step='abc' must be an integer"),
        ({"run": "r", "tag": "loss", "since_step": "1.5"}, "since_step='1.5'"),
        ({"run": "r", "tag": "loss", "since_step": "99999999999999999999999"}, "since_step"),
        ({"run": "r", "tag": "loss", "limit": "-1"}, "limit=-1 is out of range"),
        ({"run": "r", "tag": "loss", "limit": "0"}, "limit=0 is out of range"),
        ({"run": "r", "tag": "loss", "limit": str(10**9)}, "out of range"),
        ({"run": "r", "tag": "loss", "limit": "²"}, "limit='²'"),
    ],
)
async def test_malformed_scalars_query_is_400_saying_what_to_fix(params: dict[str, str], fragment: str) -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", [1]))
        status, body, headers = await get(app.url + "/api/scalars", params=params)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict)
    assert fragment in body["error"]


async def test_unknown_run_or_tag_is_404_listing_what_exists() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", [1]))
        s1, run404, _ = await get(app.url + "/api/scalars", params={"run": "nope", "tag": "loss"})
        s2, tag404, _ = await get(app.url + "/api/scalars", params={"run": "r", "tag": "nope"})
    assert (s1, s2) == (404, 404)
    assert isinstance(run404, dict)
    assert isinstance(tag404, dict)
    assert "unknown run 'nope'" in run404["error"]
    assert "'r'" in run404["error"]
    assert "unknown tag 'nope'" in tag404["error"]
    assert "'loss'" in tag404["error"]


async def test_unknown_route_and_wrong_method_are_json_errors() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(app.url + "/api/nothing") as r:
            assert r.status == 404
            assert "no route" in (await r.json())["error"]
        async with s.post(app.url + "/api/runs", data=b"x") as r:
            assert r.status == 405
            assert "use GET" in (await r.json())["error"]
            assert "GET" in r.headers["Allow"]
        async with s.get(app.url + "/stream", params={"run": "["}) as r:
            assert r.status == 400
            assert "unclosed '['" in (await r.json())["error"]


async def test_metrics_expose_clients_points_and_loop_lag_in_prometheus_format() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("r", "loss", range(7)))
        await wait_for_seq(app.hub, 1)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.ws_connect(app.url + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "since": 0})
            await ws.receive_json()
            await ws.receive_json()  # the replayed batch
            await ws.send_str("{")  # one protocol error
            await ws.receive_json()
            status, text, headers = await get(app.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert isinstance(text, str)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("lightning_stream_clients", (("protocol", "ws"),))] == 1
    assert samples[("lightning_stream_clients", (("protocol", "sse"),))] == 0
    assert samples[("lightning_stream_points_in_total", ())] == 7
    assert samples[("lightning_stream_points_out_total", ())] == 7
    assert samples[("lightning_stream_replay_hits_total", ())] == 1
    assert samples[("lightning_stream_ws_client_errors_total", ())] == 1
    assert samples[("lightning_stream_bytes_held", ())] > 0
    assert ("lightning_stream_loop_lag_seconds", ()) in samples


async def test_two_apps_in_one_process_have_separate_metrics() -> None:
    async with running_app() as one, running_app() as two:
        ingest(one.hub, batch("r", "loss", range(3)))
        _, text_two, _ = await get(two.url + "/metrics")
    assert isinstance(text_two, str)
    assert "lightning_stream_points_in_total 0.0" in text_two


async def test_index_serves_the_dashboard_or_a_placeholder() -> None:
    async with running_app() as app:
        status, body, headers = await get(app.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    index = STATIC_DIR / "index.html"
    if index.is_file():
        assert isinstance(body, str)
        assert BOOT_ELEMENT in index.read_text()
        assert re.sub(BOOT_DATA, BOOT_ELEMENT, body) == index.read_text()  # the page, with the data in it
    else:
        assert "lightning-stream" in str(body)


BOOT_DATA = r'<script id="boot-data" type="application/json">.*?</script>'


def boot_of(page: str) -> Any:
    found = re.search(r'<script id="boot-data" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None, page[:500]
    return json.loads(found.group(1))


async def test_index_embeds_health_runs_and_the_top_tag_taken_at_one_seq_no_store() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("b", "val/loss", [1, 2]), batch("a", "train/loss", [1]), batch("a", "lr", [1]))
        status, page, headers = await get(app.url + "/")
        _, runs, _ = await get(app.url + "/api/runs")
        seq = app.hub.seq
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert isinstance(page, str)
    boot = boot_of(page)
    assert boot["runs"] == runs
    assert boot["health"]["seq"] == seq > 0  # queued points were flushed before: seq covers the runs listed
    assert boot["health"]["pid"] == os.getpid()
    assert boot["first"] == "lr"  # tags without a prefix come first (layout.js), then groups by name


async def test_index_data_cannot_end_its_script_element_and_needs_the_token() -> None:
    token = "index-token-123"
    async with running_app(token=token) as app:
        ingest(app.hub, batch("</script><script>alert(1)</script><!--", "loss", [1]))
        denied, refusal, _ = await get(app.url + "/")
        status, page, _ = await get(app.url + "/?token=" + token)
    assert denied == 401  # the runs in the page are for token holders, as /api/runs is
    assert "boot-data" not in str(refusal)
    assert status == 200
    assert isinstance(page, str)
    assert "<script>alert" not in page
    assert "<" not in page.split('<script id="boot-data" type="application/json">')[1].split("</script>")[0]
    assert boot_of(page)["runs"][0]["run"] == "</script><script>alert(1)</script><!--"


SERIES_DATA = r'<script id="first-series" type="application/json">(.*?)</script>'


def embedded_of(page: str) -> Any:
    """The top card's series as the page carries them (None: not embedded)."""
    found = re.search(SERIES_DATA, page, re.S)
    assert found is not None, page[-500:]
    return json.loads(found.group(1))


async def test_index_embeds_the_top_cards_series_as_api_series_answers_them_at_the_boot_seq() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("b", "lr", range(400)), batch("a", "lr", [1, 5]), batch("a", "val/x", range(900)))
        _, page, _ = await get(app.url + "/")
        _, answer, _ = await get(app.url + "/api/series?run=*&tag=lr&max_points=400")
    assert isinstance(page, str)
    boot, embedded = boot_of(page), embedded_of(page)
    assert boot["first"] == "lr"
    assert boot["first_embedded"] is True
    assert embedded == answer  # the very answer the page would have fetched, every series whole
    assert embedded["seq"] == boot["health"]["seq"] > 0  # taken at the instant the runs were listed
    assert [s["run"] for s in embedded["series"]] == ["a", "b"]
    assert embedded["series"][1]["steps"] == list(range(400))
    assert page.index('id="first-series"') > page.index('<link rel="modulepreload"')  # after what loads the page
    assert page.rstrip().endswith("</html>")


async def test_index_embeds_no_series_longer_than_400_points_nor_over_the_budget() -> None:
    async with running_app() as app:
        ingest(app.hub, batch("a", "lr", range(400)), batch("b", "lr", range(401)))  # one too long
        _, too_long, _ = await get(app.url + "/")
    async with running_app() as app:
        ingest(app.hub, *(batch(f"r{i:03d}", "lr", range(EMBED_SERIES_POINTS)) for i in range(251)))  # 100,400 points
        _, too_many, _ = await get(app.url + "/")
    assert EMBED_POINTS < 251 * EMBED_SERIES_POINTS
    for page in (too_long, too_many):
        assert isinstance(page, str)
        assert boot_of(page)["first_embedded"] is False  # the page fetches them, at its own width
        assert embedded_of(page) is None


async def test_embedded_series_cannot_end_their_script_element() -> None:
    name = "</script><script>alert(1)</script><!--"
    async with running_app() as app:
        ingest(app.hub, batch(name, "loss", [1, 2]), batch("x", "</script>", [1]))
        _, page, _ = await get(app.url + "/")
    assert isinstance(page, str)
    assert "<script>alert" not in page
    assert "<" not in re.search(SERIES_DATA, page, re.S).group(1)  # type: ignore[union-attr]
    assert embedded_of(page)["series"][0]["run"] == name


def test_first_tag_follows_the_cards_order() -> None:
    assert first_tag([]) is None
    assert first_tag([{"tags": ["z/a", "b/x", "b/c"]}, {"tags": ["c/a"]}]) == "b/c"
    assert first_tag([{"tags": ["b/x", "zz", "/lead"]}]) == "/lead"  # a leading slash is no prefix
    assert first_tag([{"tags": ["a/b", "a", "a0"]}]) == "a"


async def test_openapi_document_describes_the_rest_routes() -> None:
    async with running_app() as app:
        status, doc, _ = await get(app.url + "/api/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    assert doc["openapi"].startswith("3.")
    assert {"/health", "/api/runs", "/api/scalars"} <= set(doc["paths"])
    params = {p["name"] for p in doc["paths"]["/api/scalars"]["get"]["parameters"]}
    assert params == {"run", "tag", "since_step", "limit"}


# ---- shared machine (issue 14) ------------------------------------------------------------------


async def test_a_missing_static_file_is_a_json_404_and_existing_ones_are_served() -> None:
    async with running_app() as app:
        status, body, _ = await get(app.url + "/static/no-such-module.js")
        assert status == 404
        assert isinstance(body, dict)
        assert "no static file 'no-such-module.js'" in body["error"]
        present = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())
        if present:
            status, _, _ = await get(app.url + "/static/" + present[0])
            assert status == 200


async def test_every_answer_asks_browsers_to_send_no_referrer() -> None:
    async with running_app() as app, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for path in ("/", "/health", "/api/runs", "/api/nothing", "/static/nothing", "/api/scalars"):
            async with s.get(app.url + path) as r:
                assert r.headers.get("Referrer-Policy") == "no-referrer", path
        async with s.get(app.url + "/stream") as r:
            assert r.headers.get("Referrer-Policy") == "no-referrer"


async def test_health_on_a_token_server_tells_only_the_status_to_callers_without_the_token() -> None:
    token = "health-token-123"
    async with running_app(token=token) as app:
        status, body, _ = await get(app.url + "/health")
        assert (status, body) == (200, {"status": "ok"})
        status, body, _ = await get(app.url + "/health", headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        assert isinstance(body, dict)
        assert {"pid", "logdirs", "clients", "version"} <= set(body)

"""The dashboard (``GET /``) in a real headless Chromium against a real ``StreamServer``.

State is read from ``window.lightningStream`` and the DOM, and every wait polls with a
generous deadline (``browser.WAIT_S``): the assertions are about what the page shows, never
about how fast a shared machine shows it.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from browser import Watched, browser_fixture, open_page, wait_until  # noqa: F401 (the `browser` fixture)

from lightning_stream.config import ServerConfig
from lightning_stream.server import StreamServer

pytestmark = pytest.mark.browser

TOKEN = "s3cret-token-for-tests"

HAS_POINT = """([run, tag, step]) => {
  const s = window.lightningStream.series(run, tag);
  return s !== null && s.steps.includes(step);
}"""

VISIBLE_TAGS = "els => els.filter(e => !e.hidden).map(e => e.dataset.tag)"


def _config(**overrides: Any) -> ServerConfig:
    return ServerConfig(registry=False, watchdog_interval_s=0, **overrides)


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(_config()).start()
    try:
        yield srv
    finally:
        srv.stop()


def publish_curve(server: StreamServer, run: str, tag: str, steps: range, f: Any = None) -> None:
    for step in steps:
        server.publish(run, tag, step, f(step) if f else 1.0 / (1 + step), wall_time=1_700_000_000.0 + step)


def wait_loaded(w: Watched, series_count: int) -> dict[str, Any]:
    """Wait until the history is loaded, the stream is live and ``series_count`` series hold points."""

    def ready() -> dict[str, Any] | None:
        snap = w.snapshot()
        held = sum(1 for c in snap["charts"] for s in c["series"] if s["points"] > 0)
        ok = snap["loaded"] and snap["streamState"] == "live" and held >= series_count
        return snap if ok else None

    return wait_until(ready, f"{series_count} series loaded and the stream live")


def visible_tags(w: Watched) -> list[str]:
    tags: list[str] = w.page.eval_on_selector_all(".chart", VISIBLE_TAGS)
    return tags


def tensorboard_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA (vz_line_chart2 resmoothDataset), the reference for the page."""
    last, out = 0.0, []
    for count, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


def test_page_loads_history_and_draws_a_chart_per_tag_without_console_errors(
    browser: Any, server: StreamServer
) -> None:
    publish_curve(server, "version_0", "train/loss", range(0, 200, 10))
    publish_curve(server, "version_1", "train/loss", range(0, 100, 10))
    publish_curve(server, "version_0", "val/acc", range(0, 200, 50), lambda s: s / 200)
    wait_until(lambda: server.port and _points_held(server) >= 28, "the server to hold the points")

    with open_page(browser, server.url + "/") as w:
        snap = wait_loaded(w, 3)
        assert sorted(c["tag"] for c in snap["charts"]) == ["train/loss", "val/acc"]
        assert visible_tags(w) == ["train/loss", "val/acc"]
        loss = w.series("version_0", "train/loss")
        assert loss is not None
        assert loss["steps"] == list(range(0, 200, 10))
        assert loss["values"] == pytest.approx([1.0 / (1 + s) for s in range(0, 200, 10)])
        assert loss["wallTimes"][0] == pytest.approx(1_700_000_000.0)
        # both runs are drawn in the same chart, in distinct colours
        w.wait_js("() => window.lightningStream.snapshot().charts.every(c => c.draws > 0)")
        colours = {r["run"]: r["color"] for r in w.snapshot()["runs"]}
        assert set(colours) == {"version_0", "version_1"}
        assert colours["version_0"] != colours["version_1"]
        # the canvas really has pixels on it
        assert w.page.evaluate(
            """() => {
              const c = document.querySelector('.chart[data-tag="train/loss"] canvas');
              const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) return true;
              return false;
            }"""
        )
        assert w.page.text_content("#rest-state") is not None
        assert w.page.get_attribute("#rest-state", "data-state") == "ok"
        assert w.console_errors == []
        assert w.page_errors == []


def _points_held(server: StreamServer) -> int:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as answer:
        return int(json.load(answer)["events_total"])


def test_point_published_after_load_shows_up_live_over_sse(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "run", "loss", range(5))
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 1)
        draws_before = w.snapshot()["draws"]
        server.publish("run", "loss", 1000, 0.5)
        w.wait_js(HAS_POINT, ["run", "loss", 1000])
        # a new tag gets its own chart, drawn from the stream alone
        server.publish("run", "new/tag", 7, 3.0)
        w.wait_js(HAS_POINT, ["run", "new/tag", 7])
        w.wait_js("() => window.lightningStream.snapshot().charts.some(c => c.tag === 'new/tag' && c.draws > 0)")
        assert w.snapshot()["draws"] > draws_before
        assert "new/tag" in visible_tags(w)
        assert w.snapshot()["transport"] == "sse"
        assert w.page_errors == []


def test_websocket_transport_receives_live_points(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "run", "loss", range(3))
    with open_page(browser, server.url + "/?transport=ws") as w:
        snap = wait_loaded(w, 1)
        assert snap["transport"] == "ws"
        assert w.page.input_value("#transport") == "ws"
        server.publish("run", "loss", 50, 0.25)
        w.wait_js(HAS_POINT, ["run", "loss", 50])
        # switching transport in the status panel resumes on SSE without losing a point
        w.page.select_option("#transport", "sse")
        w.wait_js(
            "() => { const s = window.lightningStream.snapshot(); return s.transport === 'sse' && s.streamState === 'live'; }"
        )
        server.publish("run", "loss", 60, 0.2)
        w.wait_js(HAS_POINT, ["run", "loss", 60])
        series = w.series("run", "loss")
        assert series is not None
        assert series["steps"] == [0, 1, 2, 50, 60]
        assert w.page_errors == []


def test_run_and_tag_filters_hide_charts_and_runs(browser: Any, server: StreamServer) -> None:
    for run in ("baseline", "wide_lr"):
        for tag in ("train/loss", "train/acc", "val/loss"):
            publish_curve(server, run, tag, range(3))
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 6)
        assert visible_tags(w) == ["train/acc", "train/loss", "val/loss"]

        # charts are grouped by tag prefix, like TensorBoard; a group folds away
        w.page.click('.group[data-group="train"]')
        wait_until(lambda: visible_tags(w) == ["val/loss"], "the train group to fold")
        assert w.page.get_attribute('.group[data-group="train"]', "aria-expanded") == "false"
        w.page.click('.group[data-group="train"]')
        wait_until(lambda: len(visible_tags(w)) == 3, "the train group to unfold")

        w.page.fill("#tag-filter", "train/*")
        wait_until(lambda: visible_tags(w) == ["train/acc", "train/loss"], "the tag glob to hide val/loss")
        assert not w.page.is_visible('.group[data-group="val"]')  # no chart left in it
        w.page.fill("#tag-filter", "loss !val*")  # plain word matches anywhere; ! excludes
        wait_until(lambda: visible_tags(w) == ["train/loss"], "substring and exclusion to apply")

        w.page.fill("#run-filter", "wide*")
        wait_until(
            lambda: [r["run"] for r in w.snapshot()["runs"] if r["visible"]] == ["wide_lr"],
            "the run glob to leave wide_lr",
        )
        # the chart now draws one run only
        w.wait_js("() => window.lightningStream.snapshot().charts.find(c => c.tag === 'train/loss').drawnPoints === 3")
        w.page.fill("#run-filter", "")
        w.page.uncheck('.run[data-run="baseline"] input')
        wait_until(
            lambda: [r["run"] for r in w.snapshot()["runs"] if r["visible"]] == ["wide_lr"],
            "the run checkbox to hide baseline",
        )
        w.page.fill("#tag-filter", "nothing-matches-this")
        wait_until(lambda: visible_tags(w) == [], "every chart hidden")
        assert w.page.is_visible("#empty")
        assert "filter" in (w.page.text_content("#empty") or "")
        w.page.fill("#tag-filter", "")
        wait_until(lambda: len(visible_tags(w)) == 3, "charts back after clearing the filter")
        assert w.page_errors == []
    # a link can open a filtered view (notebooks, bookmarks)
    with open_page(browser, server.url + "/?tag=val*&run=base*") as w:
        wait_loaded(w, 2)
        assert w.page.input_value("#tag-filter") == "val*"
        wait_until(lambda: visible_tags(w) == ["val/loss"], "the URL's tag filter")
        assert [r["run"] for r in w.snapshot()["runs"] if r["visible"]] == ["baseline"]


def test_smoothing_matches_tensorboard_and_log_scale_redraws(browser: Any, server: StreamServer) -> None:
    values = [math.sin(s / 3) + 0.1 * s for s in range(40)]
    for step, value in enumerate(values):
        server.publish("run", "signal", step, value)
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 1)
        w.page.fill("#smoothing", "0.9")
        wait_until(lambda: w.snapshot()["smoothing"] == 0.9, "the smoothing slider to apply")
        smoothed = w.page.evaluate("() => window.lightningStream.smoothed('run', 'signal')")
        assert smoothed == pytest.approx(tensorboard_ema(values, 0.9), rel=1e-5, abs=1e-6)
        assert w.page.text_content("#smoothing-value") == "0.90"

        # live points continue the smoothing incrementally, with the same result as from scratch
        server.publish("run", "signal", 40, 10.0)
        w.wait_js(HAS_POINT, ["run", "signal", 40])
        smoothed = w.page.evaluate("() => window.lightningStream.smoothed('run', 'signal')")
        assert smoothed == pytest.approx(tensorboard_ema([*values, 10.0], 0.9), rel=1e-5, abs=1e-6)

        draws = w.snapshot()["charts"][0]["draws"]
        w.page.check("#log-scale")  # the series has values <= 0: they are left out, not an error
        w.wait_js("(n) => window.lightningStream.snapshot().charts[0].draws > n", draws)
        assert w.snapshot()["logScale"] is True
        w.page.fill("#smoothing", "0")
        wait_until(lambda: w.snapshot()["smoothing"] == 0, "smoothing off")
        assert w.page.evaluate("() => window.lightningStream.smoothed('run', 'signal')") == pytest.approx(
            [*values, 10.0]
        )
        assert w.page_errors == []
        assert w.console_errors == []


def test_hover_shows_step_value_and_wall_time_of_each_run(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "alpha", "loss", range(0, 101, 10))
    publish_curve(server, "beta", "loss", range(0, 101, 10), lambda s: 2.0)
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 2)
        w.wait_js("() => window.lightningStream.snapshot().charts[0].draws > 0")
        box = w.page.locator('.chart[data-tag="loss"] canvas.overlay').bounding_box()
        assert box is not None
        w.page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] / 2)
        w.page.wait_for_selector("#tooltip:not([hidden])", timeout=20_000)
        text = w.page.text_content("#tooltip") or ""
        assert "alpha" in text
        assert "beta" in text
        assert "100" in text  # the nearest step at the right edge
        assert "step" in text
        assert "time" in text
        w.page.mouse.move(5, 5)
        w.page.wait_for_selector("#tooltip", state="hidden", timeout=20_000)
        assert w.page_errors == []


def test_run_lifecycle_from_status_events(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "good", "loss", range(3))
    publish_curve(server, "bad", "loss", range(3))
    server.publish_status("good", "started")
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 2)
        badge = '.run[data-run="{}"] .badge'
        wait_until(lambda: w.page.get_attribute(badge.format("good"), "data-state") == "running", "good running")
        server.publish_status("good", "finished")
        server.publish_status("bad", "failed", error="CUDA out of memory")
        wait_until(lambda: w.page.get_attribute(badge.format("good"), "data-state") == "finished", "good finished")
        wait_until(lambda: w.page.get_attribute(badge.format("bad"), "data-state") == "failed", "bad failed")
        assert w.page.get_attribute('.run[data-run="bad"]', "title") == "CUDA out of memory"
        lifecycles = {r["run"]: r["lifecycle"] for r in w.snapshot()["runs"]}
        assert lifecycles == {"bad": "failed", "good": "finished"}


def test_status_panel_reflects_a_stopped_server(browser: Any) -> None:
    srv = StreamServer(_config()).start()
    try:
        publish_curve(srv, "run", "loss", range(3))
        with open_page(browser, srv.url + "/") as w:
            wait_loaded(w, 1)
            assert w.page.get_attribute("#conn-pill", "data-state") == "live"
            srv.stop()
            wait_until(lambda: w.page.get_attribute("#rest-state", "data-state") == "unreachable", "REST down")
            wait_until(lambda: w.page.get_attribute("#stream-state", "data-state") == "offline", "stream down")
            wait_until(lambda: w.page.get_attribute("#conn-pill", "data-state") == "offline", "pill offline")
            assert w.page.text_content("#rest-state") == "unreachable"
            # what was loaded stays on screen
            assert w.series("run", "loss") is not None
            assert w.page_errors == []
    finally:
        srv.stop()


class CuttableProxy:
    """A loopback TCP proxy the test can cut: every open connection dies and new ones are refused
    (accepted, then closed at once) until ``restore()``: a real network drop, not a mocked one."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()
        self.thread.join(timeout=5)


def test_reconnect_after_a_network_drop_resumes_without_losing_points(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "run", "loss", range(3))
    proxy = CuttableProxy(server.port)
    try:
        with open_page(browser, f"http://127.0.0.1:{proxy.port}/") as w:
            wait_loaded(w, 1)
            proxy.cut()
            wait_until(lambda: w.snapshot()["streamState"] == "offline", "the stream to drop")
            for step in range(10, 20):
                server.publish("run", "loss", step, 0.1)
            proxy.restore()
            w.wait_js(HAS_POINT, ["run", "loss", 19])
            series = w.series("run", "loss")
            assert series is not None
            assert series["steps"] == [0, 1, 2, *range(10, 20)]
            snap = w.snapshot()
            assert snap["reloads"] == 0  # resumed from the last id: no history reload
            assert snap["reconnects"] >= 1
            assert snap["streamState"] == "live"
            assert w.page_errors == []
    finally:
        proxy.close()


def test_server_restart_resets_and_reloads_history(browser: Any, server: StreamServer) -> None:
    publish_curve(server, "run", "loss", range(3))
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 1)
        server.restart()  # same port, fresh hub: sequence numbers start again
        server.publish("run", "loss", 500, 0.5)
        w.wait_js(HAS_POINT, ["run", "loss", 500], timeout_s=40)
        wait_until(lambda: w.snapshot()["reloads"] >= 1, "a history reload")
        # the new incarnation holds only the new point; the page shows what the server holds
        wait_until(lambda: (w.series("run", "loss") or {}).get("steps") == [500], "the reloaded history")
        assert w.page_errors == []


def test_token_in_page_url_reaches_the_api_and_the_stream(browser: Any) -> None:
    srv = StreamServer(_config(token=TOKEN)).start()
    try:
        publish_curve(srv, "run", "loss", range(3))
        for transport in ("sse", "ws"):
            with open_page(browser, f"{srv.url}/?token={TOKEN}&transport={transport}") as w:
                wait_loaded(w, 1)
                srv.publish("run", "loss", 100 if transport == "sse" else 200, 0.5)
                w.wait_js(HAS_POINT, ["run", "loss", 100 if transport == "sse" else 200])
                assert w.console_errors == []
    finally:
        srv.stop()


def test_non_finite_values_are_held_and_skipped_when_drawing(browser: Any, server: StreamServer) -> None:
    server.publish("run", "loss", 0, 1.0)
    server.publish("run", "loss", 1, float("nan"))
    server.publish("run", "loss", 2, float("inf"))
    server.publish("run", "loss", 3, 0.5)
    with open_page(browser, server.url + "/") as w:
        wait_loaded(w, 1)
        server.publish("run", "loss", 4, float("nan"))
        w.wait_js(HAS_POINT, ["run", "loss", 4])
        values = w.page.evaluate("() => window.lightningStream.series('run', 'loss').values.map(String)")
        assert values == ["1", "NaN", "Infinity", "0.5", "NaN"]
        w.wait_js("() => window.lightningStream.snapshot().charts[0].draws > 0")
        assert w.page_errors == []
        assert w.console_errors == []


def test_a_single_spike_among_100k_points_survives_decimation(browser: Any, server: StreamServer) -> None:
    n = 100_000
    for step in range(n):
        server.publish("run", "loss", step, 100.0 if step == 61_803 else 0.0, wall_time=1_700_000_000.0 + step)
    wait_until(lambda: _points_held(server) >= n, "the server to hold 100k points")
    with open_page(browser, server.url + "/?smoothing=0") as w:
        wait_loaded(w, 1)
        # the page holds a min/max summary (about two points per pixel column), drawn at least once
        w.wait_js("() => window.lightningStream.snapshot().charts[0].draws > 0")
        held = w.series("run", "loss")
        assert held is not None
        assert held["steps"][0] == 0
        assert held["steps"][-1] == n - 1
        assert 100.0 in held["values"]
        # the run's colour must reach the top fifth of the canvas, around 62% of the width
        hit = w.page.evaluate(
            """() => {
              const hex = window.lightningStream.snapshot().runs[0].color;
              const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
              const c = document.querySelector('.chart canvas');
              const ctx = c.getContext('2d');
              const px = ctx.getImageData(0, 0, c.width, Math.floor(c.height / 5)).data;
              const cols = [];
              for (let i = 0; i < px.length; i += 4) {
                const near = want.every((v, k) => Math.abs(px[i + k] - v) < 40);
                if (px[i + 3] > 200 && near) cols.push(((i / 4) % c.width) / c.width);
              }
              return cols.length ? [Math.min(...cols), Math.max(...cols)] : null;
            }"""
        )
        assert hit is not None, "the spike was decimated away"
        assert 0.5 < hit[0] <= hit[1] < 0.75
        assert w.page_errors == []


def test_points_published_while_the_page_loads_arrive_exactly_once(browser: Any, server: StreamServer) -> None:
    stop = threading.Event()
    published: list[int] = []

    def publisher() -> None:
        step = 0
        while not stop.is_set():
            for tag in ("a", "b", "c"):
                server.publish("run", tag, step, float(step))
            published.append(step)
            step += 1
            stop.wait(0.002)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    try:
        with open_page(browser, server.url + "/") as w:
            wait_loaded(w, 3)
            at_load = len(published)
            wait_until(lambda: len(published) > at_load + 100, "more points published after the page went live")
            stop.set()
            thread.join(timeout=10)
            last = published[-1]
            for tag in ("a", "b", "c"):
                w.wait_js(HAS_POINT, ["run", tag, last])
                series = w.series("run", tag)
                assert series is not None
                assert series["steps"] == list(range(last + 1)), f"tag {tag}: lost or doubled points"
            assert w.snapshot()["reloads"] == 0
            assert w.page_errors == []
    finally:
        stop.set()
        thread.join(timeout=10)

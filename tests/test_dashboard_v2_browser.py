"""Dashboard v2 in a real headless Chromium against a real ``StreamServer``: lazy cards, zoom that
holds while points stream in (and re-queries the exact window), outliers, the URL as the view's
home, exports. Every wait polls with a generous deadline (``browser.WAIT_S``); no timed assertion.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Watched, browser_fixture, open_page, wait_until  # noqa: F401 (the `browser` fixture)

from lightning_stream.config import ServerConfig
from lightning_stream.server import StreamServer

pytestmark = pytest.mark.browser

HAS_POINT = """([run, tag, step]) => {
  const s = window.lightningStream.series(run, tag);
  return s !== null && s.steps.includes(step);
}"""


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)).start()
    try:
        yield srv
    finally:
        srv.stop()


def chart(w: Watched, tag: str) -> dict[str, Any]:
    """The snapshot of the chart of ``tag`` (empty until the page has it)."""
    found: dict[str, Any] = next((c for c in w.snapshot()["charts"] if c["tag"] == tag), {})
    return found


def href(w: Watched) -> str:
    """The page's URL now (``page.url`` lags behind ``history.replaceState``)."""
    url: str = w.page.evaluate("location.href")
    return url


def wait_drawn(w: Watched, tag: str) -> dict[str, Any]:
    return wait_until(
        lambda: (c := chart(w, tag)).get("loadState") == "loaded" and c["draws"] > 0 and c, f"{tag} loaded and drawn"
    )


def drag(w: Watched, tag: str, x0: float, x1: float, *, shift: bool = False, y0: float = 0.5, y1: float = 0.5) -> None:
    """Drag on the chart's plot from fraction x0 to x1 of its width (Shift: a box)."""
    box = w.page.locator(f'.chart[data-tag="{tag}"] canvas.overlay').bounding_box()
    assert box is not None
    if shift:
        w.page.keyboard.down("Shift")
    w.page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    w.page.mouse.down()
    w.page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=5)
    w.page.mouse.up()
    if shift:
        w.page.keyboard.up("Shift")


def test_only_cards_on_screen_load_in_a_few_requests(browser: Any, server: StreamServer) -> None:
    for run in ("a", "b", "c"):
        for t in range(40):
            for step in range(5):
                server.publish(run, f"tag{t:02d}", step, float(step))
    with open_page(browser, server.url + "/") as w:
        wait_drawn(w, "tag00")
        snap = w.snapshot()
        assert len(snap["charts"]) == 40
        loaded = [c["tag"] for c in snap["charts"] if c["loadState"] != "unloaded"]
        assert 0 < len(loaded) < 20, loaded  # a screenful (and a margin), not all 40 x 3 series
        # the top card alone (it paints first), then the others on screen together, all runs each
        assert snap["requests"]["series"] <= 3
        assert "tag39" not in loaded
        w.page.locator('.chart[data-tag="tag39"]').scroll_into_view_if_needed()
        wait_drawn(w, "tag39")
        held = w.series("c", "tag39")
        assert held is not None
        assert held["steps"] == [0, 1, 2, 3, 4]
        assert w.page_errors == []
        assert w.console_errors == []


COMPLETE = """() => { const p = window.lightningStream.progress();
  return p.inView > 0 && p.complete === p.inView && p; }"""


def test_many_runs_load_in_at_most_30_requests_with_runs_and_health_in_the_page(
    browser: Any, server: StreamServer
) -> None:
    for r in range(30):
        for t in range(20):
            tag = f"{'train' if t % 2 == 0 else 'val'}/metric_{t:02d}"
            for step in range(10):
                server.publish(f"exp{r // 10}/version_{r % 10}", tag, step, float(step + t + r))
    wait_until(lambda: len(json.load(urllib.request.urlopen(server.url + "/api/runs"))) == 30, "30 runs held")
    with open_page(browser, server.url + "/") as w:
        progress = w.wait_js(COMPLETE)
        asked = list(w.requests)
        data = [urllib.parse.urlsplit(u) for u in asked if "/static/" not in u]
        paths = [u.path for u in data]
        assert progress["inView"] >= 4
        assert len(asked) <= 30, asked  # HTML, CSS, 22 modules, the stream and the cards' histories
        assert "/health" not in paths, paths  # /health and /api/runs came with the page
        assert "/api/runs" not in paths, paths
        series = [urllib.parse.parse_qs(u.query)["tag"] for u in data if u.path == "/api/series"]
        assert all("train/metric_00" not in tags for tags in series), series  # the top card came in the page
        assert len(series) <= 3, series
        snap = w.snapshot()
        assert snap["restState"] == "ok"
        assert len(snap["runs"]) == 30
        held = w.series("exp2/version_9", "train/metric_00")
        assert held is not None
        assert held["steps"] == list(range(10))
        assert held["values"] == [float(step + 29) for step in range(10)]
        assert chart(w, "train/metric_00")["draws"] > 0
        assert w.page_errors == []
        assert w.console_errors == []


# the text of the top card's series in the page (#first-series) when the page let go of it: null (none
# embedded) or the JSON the server wrote
EMBEDDED_SEEN = """window.__embedded = undefined;
new MutationObserver((records, observer) => {
  for (const r of records) for (const n of r.removedNodes) {
    if (n.id === "first-series") {
      window.__embedded = n.textContent;
      observer.disconnect();
    }
  }
}).observe(document, { childList: true, subtree: true });"""

PIN_SAVED = """localStorage.setItem("lightning-stream.view", JSON.stringify({ pins: ["b/two"] }));"""


def series_tags(w: Watched) -> list[list[str]]:
    return [urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["tag"] for u in w.requests if "/api/series" in u]


@pytest.mark.parametrize(
    ("path", "init", "first"),
    [
        ("/", "", None),  # the default view: its top card from the page, no request
        ("/?run=r1", "", ["a/one"]),  # a filter in the URL: fetched
        ("/", PIN_SAVED, ["b/two"]),  # a pin saved in localStorage (the server cannot see it): fetched
    ],
)
def test_the_embedded_top_card_is_used_only_in_the_default_view(
    browser: Any, server: StreamServer, path: str, init: str, first: list[str] | None
) -> None:
    for run in ("r1", "r2"):
        for tag in ("a/one", "b/two"):
            for step in range(5):
                server.publish(run, tag, step, float(step * 10 + len(run + tag)))
    with open_page(browser, server.url + path, init_script=EMBEDDED_SEEN + init) as w:
        w.wait_js(COMPLETE)
        embedded = json.loads(w.wait_js("() => window.__embedded !== undefined && window.__embedded"))
        assert [(s["run"], s["tag"]) for s in embedded["series"]] == [("r1", "a/one"), ("r2", "a/one")]
        tags = series_tags(w)
        if first is None:
            assert all("a/one" not in t for t in tags), tags
        else:
            assert tags[0] == first, tags  # the page's own first request: its top card
        top = wait_drawn(w, (first or ["a/one"])[0])
        assert top["draws"] > 0
        held = w.series("r1", "a/one")
        assert held is not None
        assert held["values"] == [float(step * 10 + 7) for step in range(5)]
        assert w.page_errors == []
        assert w.console_errors == []


def test_a_card_of_long_series_is_not_embedded_and_a_hostile_run_name_cannot_escape(
    browser: Any, server: StreamServer
) -> None:
    hostile = "</script><script>window.__escaped = 1</script><!--"
    for step in range(3):
        server.publish(hostile, "loss", step, float(step))
    with open_page(browser, server.url + "/", init_script=EMBEDDED_SEEN) as w:
        w.wait_js(COMPLETE)
        assert json.loads(w.wait_js("() => window.__embedded"))["series"][0]["run"] == hostile
        assert series_tags(w) == []  # drawn from the page itself
        assert w.series(hostile, "loss")["steps"] == [0, 1, 2]  # type: ignore[index]
        assert w.page.evaluate("window.__escaped") is None
        assert w.page_errors == []
    for step in range(3, 401):  # 401 points: the page's width decides its decimation, so it asks
        server.publish(hostile, "loss", step, float(step))
    wait_until(lambda: json.load(urllib.request.urlopen(server.url + "/api/runs"))[0]["last_step"] == 400, "401 points")
    with open_page(browser, server.url + "/", init_script=EMBEDDED_SEEN) as w:
        w.wait_js(COMPLETE)
        assert w.wait_js("() => window.__embedded") == "null"
        assert series_tags(w) == [["loss"]]
        assert len(w.series(hostile, "loss")["steps"]) == 401  # type: ignore[index]
        assert w.page_errors == []


def test_a_pinned_chart_on_top_is_loaded_first_and_no_request_is_wasted(browser: Any, server: StreamServer) -> None:
    for tag in ("a/one", "b/two", "c/three"):
        for step in range(5):
            server.publish("run", tag, step, float(step))
    with open_page(browser, server.url + "/?pin=c/three") as w:
        w.wait_js(COMPLETE)
        series = [
            urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["tag"] for u in w.requests if "/api/series" in u
        ]
        assert series == [["c/three"], ["a/one", "b/two"]]  # the top card alone, then the rest together
        assert w.page_errors == []


# when the first tool button entered the document (page clock), seen from before the page's own scripts
TOOLS_SEEN = """window.__toolsAt = null;
new MutationObserver((records, observer) => {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType === 1 && (n.matches(".tool") || n.querySelector(".tool"))) {
      window.__toolsAt = performance.now();
      observer.disconnect();
      return;
    }
  }
}).observe(document, { childList: true, subtree: true });"""


def test_the_top_chart_is_drawn_before_the_cards_get_their_tools(browser: Any, server: StreamServer) -> None:
    for r in range(3):
        for t in range(6):
            for step in range(10):
                server.publish(f"run{r}", f"train/m{t}", step, float(step * t + r))
    with open_page(browser, server.url + "/", init_script=TOOLS_SEEN) as w:
        progress = w.wait_js(COMPLETE)
        tools_at = w.wait_js("() => window.__toolsAt")
        # the first frames lay out the plots only: every card's 7 buttons and y-range form come after
        assert progress["firstDrawAt"] is not None
        assert tools_at > progress["firstDrawAt"], (tools_at, progress)
        counts = w.wait_js(
            """() => { const cards = [...document.querySelectorAll('.chart:not([hidden])')];
            const n = cards.map((c) => c.querySelectorAll('.tool').length + c.querySelectorAll('form.ylim').length);
            return cards.length === 6 && n.every((k) => k === 8) && n; }"""
        )
        assert counts == [8] * 6
        w.page.click('.chart[data-tag="train/m0"] [data-tool="pin"]')  # and they work
        wait_until(lambda: "pin=train%2Fm0" in href(w), "the pin in the URL")
        assert w.page_errors == []
        assert w.console_errors == []


SERIES_TIMINGS = """() => performance.getEntriesByType('resource').filter(e => e.name.includes('/api/series'))
  .sort((a, b) => a.startTime - b.startTime).map(e => [e.startTime, e.responseEnd])"""


def test_zoom_holds_while_points_stream_and_shows_exact_points(browser: Any, server: StreamServer) -> None:
    for step in range(20_000):
        server.publish("run", "loss", step, float(step % 7), wall_time=1_700_000_000.0 + step)
    with open_page(browser, server.url + "/?smoothing=0") as w:
        wait_drawn(w, "loss")
        held = w.series("run", "loss")
        assert held is not None
        assert held["decimated"] is True
        assert len(held["steps"]) < 5000  # a min/max summary, not 20,000 points
        drag(w, "loss", 0.45, 0.47)  # about 2 % of the steps: fewer than max_points
        zoomed = wait_until(lambda: (c := chart(w, "loss"))["window"] and c, "the zoom window's exact points")
        a, b = zoomed["zoom"]["x"]
        assert 0 < a < b < 20_000
        exact = zoomed["window"]["runs"]["run"]
        assert exact == list(range(math.floor(a), math.ceil(b) + 1))  # every step of the window
        x_range = zoomed["xRange"]

        # points stream in: the window does not move, the held series grows; they land past the
        # window, so the chart keeps its picture instead of redrawing it (a skipped redraw)
        skips = zoomed["skips"]
        for step in range(20_000, 20_050):
            server.publish("run", "loss", step, 1.0, wall_time=1_700_000_000.0 + step)
        w.wait_js(HAS_POINT, ["run", "loss", 20_049])
        wait_until(lambda: chart(w, "loss")["skips"] > skips, "the new points seen (nothing in the window changed)")
        after = chart(w, "loss")
        assert after["zoom"]["x"] == [a, b]
        assert after["xRange"] == x_range
        assert "zoomed" in (w.page.text_content('.chart[data-tag="loss"] .meta') or "")

        # double-click resets: the chart follows the data again
        box = w.page.locator('.chart[data-tag="loss"] canvas.overlay').bounding_box()
        assert box is not None
        w.page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        wait_until(lambda: (c := chart(w, "loss"))["zoom"] is None and c["xRange"][1] >= 20_049, "the reset view")
        assert w.page_errors == []


def test_shift_drag_zooms_x_and_y(browser: Any, server: StreamServer) -> None:
    for step in range(100):
        server.publish("run", "loss", step, float(step))
    with open_page(browser, server.url + "/?smoothing=0") as w:
        wait_drawn(w, "loss")
        drag(w, "loss", 0.3, 0.7, shift=True, y0=0.3, y1=0.6)
        zoom = wait_until(lambda: chart(w, "loss")["zoom"], "the box zoom")
        assert zoom["y"] is not None
        lo, hi = zoom["y"]
        assert 0 < lo < hi < 100
        wait_until(lambda: chart(w, "loss")["yRange"] == [lo, hi], "the y axis to take the box")
        # a fixed y range (the card's "y" tool), kept in the URL; the zoom box's y wins while zoomed
        w.page.dblclick('.chart[data-tag="loss"] canvas.overlay')
        w.page.click('.chart[data-tag="loss"] [data-tool="ylim"]')
        w.page.fill('.chart[data-tag="loss"] form.ylim input[name="lo"]', "-10")
        w.page.fill('.chart[data-tag="loss"] form.ylim input[name="hi"]', "250")
        w.page.click('.chart[data-tag="loss"] form.ylim button')
        wait_until(lambda: chart(w, "loss")["yRange"] == [-10, 250], "the fixed y range")
        wait_until(lambda: "ylim=loss%3A-10%2C250" in href(w), "the y range in the URL")


def test_ignore_outliers_keeps_the_curve_readable_and_marks_clipping(browser: Any, server: StreamServer) -> None:
    for step in range(300):
        server.publish("run", "loss", step, 1e4 if step == 150 else 1.0 + step / 300)
    with open_page(browser, server.url + "/?smoothing=0") as w:
        first = wait_drawn(w, "loss")
        assert first["yRange"][1] > 1e4 * 0.99
        assert first["clipped"] is False
        w.page.check("#outliers")
        clipped = wait_until(lambda: (c := chart(w, "loss"))["clipped"] and c, "the robust range")
        assert clipped["yRange"][1] < 3
        wait_until(lambda: "outliers=1" in href(w), "the URL to say so")
        # per chart too: the card's toggle overrides the global switch off
        w.page.uncheck("#outliers")
        wait_until(lambda: not chart(w, "loss")["clipped"], "the full range again")
        w.page.click('.chart[data-tag="loss"] [data-tool="outliers"]')
        wait_until(lambda: chart(w, "loss")["clipped"], "the card's own outlier switch")
        # ... and on: with the global switch on, the card's switch turns it off for this card only
        w.page.check("#outliers")
        w.page.click('.chart[data-tag="loss"] [data-tool="outliers"]')
        wait_until(lambda: not chart(w, "loss")["clipped"], "the card's switch overriding the global one")
        assert w.page.get_attribute('.chart[data-tag="loss"] [data-tool="outliers"]', "aria-pressed") == "false"
        wait_until(lambda: "chart=loss%3A-outliers" in href(w), "the override in the URL")


def test_the_url_holds_the_view_and_reopens_it(browser: Any, server: StreamServer) -> None:
    for run in ("alpha", "beta"):
        for tag in ("train/loss", "val/acc"):
            for step in range(50):
                server.publish(run, tag, step, float(step), wall_time=1_700_000_000.0 + 2 * step)
    with open_page(browser, server.url + "/") as w:
        wait_drawn(w, "val/acc")
        w.page.fill("#smoothing", "0.3")
        w.page.select_option("#x-mode", "relative")
        w.page.click('.chart[data-tag="val/acc"] [data-tool="pin"]')
        w.page.eval_on_selector(
            '.run[data-run="beta"] input.swatch',
            "el => { el.value = '#00ff00'; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        )
        w.page.evaluate("() => window.lightningStream.zoom('train/loss', [10, 40])")
        w.page.uncheck('.run[data-run="alpha"] input[type=checkbox]')
        wait_until(lambda: "zoom=" in href(w) and "hide=alpha" in href(w), "the URL to catch up")
        url = href(w)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        assert query["smoothing"] == ["0.3"]
        assert query["x"] == ["relative"]
        assert query["pin"] == ["val/acc"]
        assert query["color"] == ["beta:#00ff00"]
        # preferences outlive the link (localStorage): a bare URL keeps smoothing, x mode and colours,
        # not the zoom windows or the hidden runs of that one look
        w.page.goto(server.url + "/")
        wait_drawn(w, "train/loss")
        bare = w.snapshot()
        assert (bare["smoothing"], bare["xMode"]) == (0.3, "relative")
        assert {r["run"]: r["color"] for r in bare["runs"]}["beta"] == "#00ff00"
        assert all(r["visible"] for r in bare["runs"])
        assert chart(w, "train/loss")["zoom"] is None
    # a fresh context (no localStorage) with that URL shows the same view
    with open_page(browser, url) as w:
        wait_drawn(w, "train/loss")
        snap = w.snapshot()
        assert snap["smoothing"] == 0.3
        assert snap["xMode"] == "relative"
        colours = {r["run"]: r["color"] for r in snap["runs"]}
        assert colours["beta"] == "#00ff00"
        assert [r["run"] for r in snap["runs"] if r["visible"]] == ["beta"]
        assert chart(w, "val/acc")["pinned"] is True
        first_card = w.page.eval_on_selector_all(".chart:not([hidden])", "els => els.map(e => e.dataset.tag)")[0]
        assert first_card == "val/acc"
        assert chart(w, "train/loss")["zoom"]["x"] == [10, 40]
        # relative time: each run from its own start, in seconds (2 s per step here)
        wait_until(lambda: chart(w, "train/loss")["xRange"] == [10, 40], "the zoomed relative axis")
        assert w.page_errors == []


def test_run_colours_come_from_the_name_not_from_the_other_runs(browser: Any, server: StreamServer) -> None:
    def colours() -> dict[str, str]:
        with open_page(browser, server.url + "/") as w:
            wait_until(lambda: len(w.snapshot()["runs"]) == runs, f"{runs} runs")
            return {r["run"]: r["color"] for r in w.snapshot()["runs"]}

    runs = 1
    server.publish("zeta", "loss", 0, 1.0)
    alone = colours()
    runs = 4
    for run in ("alpha", "beta", "gamma"):  # their palette slots differ from zeta's: no probing
        server.publish(run, "loss", 0, 1.0)
    together = colours()
    assert together["zeta"] == alone["zeta"]  # the order of appearance used to decide it
    assert len(set(together.values())) == 4
    assert colours() == together  # and every page agrees


def test_export_downloads_csv_json_and_png_of_the_chart(browser: Any, server: StreamServer, tmp_path: Path) -> None:
    for step in range(3):
        server.publish("run", "train/loss", step, 0.5 * step, wall_time=1_700_000_000.0 + step)
    with open_page(browser, server.url + "/", accept_downloads=True) as w:
        wait_drawn(w, "train/loss")
        files = {}
        for fmt in ("csv", "json", "png"):
            with w.page.expect_download() as info:
                w.page.click(f'.chart[data-tag="train/loss"] [data-tool="{fmt}"]')
            download = info.value
            assert download.suggested_filename == f"train_loss.{fmt}"
            path = tmp_path / download.suggested_filename
            download.save_as(path)
            files[fmt] = path
        assert files["csv"].read_text().splitlines() == [
            "run,tag,step,wall_time,value",
            "run,train/loss,0,1700000000,0",
            "run,train/loss,1,1700000001,0.5",
            "run,train/loss,2,1700000002,1",
        ]
        body = json.loads(files["json"].read_text())
        assert body["series"][0]["steps"] == [0, 1, 2]
        assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with w.page.expect_download() as info:
            w.page.click("#download-all")
        every = tmp_path / "all.csv"
        info.value.save_as(every)
        assert every.read_text() == files["csv"].read_text()  # the one chart shown, as one CSV
        assert w.page_errors == []


def test_a_new_run_shows_up_without_a_reload(browser: Any, server: StreamServer) -> None:
    server.publish("old", "loss", 0, 1.0)
    with open_page(browser, server.url + "/") as w:
        wait_drawn(w, "loss")
        server.publish("new", "loss", 5, 2.0)
        w.wait_js(HAS_POINT, ["new", "loss", 5])
        wait_until(lambda: w.page.is_visible('.run[data-run="new"]'), "the new run in the runs list")
        assert w.snapshot()["reloads"] == 0


def test_sync_zoom_wheel_zoom_and_show_only_one_run(browser: Any, server: StreamServer) -> None:
    for run in ("a", "b", "c"):
        for tag in ("x/loss", "x/acc"):
            for step in range(100):
                server.publish(run, tag, step, float(step))
    with open_page(browser, server.url + "/?smoothing=0") as w:
        wait_drawn(w, "x/loss")
        wait_drawn(w, "x/acc")
        # Ctrl + wheel zooms x around the cursor; a plain wheel leaves the chart alone
        box = w.page.locator('.chart[data-tag="x/loss"] canvas.overlay').bounding_box()
        assert box is not None
        w.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        w.page.keyboard.down("Control")
        w.page.mouse.wheel(0, -200)
        w.page.keyboard.up("Control")
        zoom = wait_until(lambda: chart(w, "x/loss")["zoom"], "the wheel zoom")
        assert 0 < zoom["x"][0] < zoom["x"][1] < 99
        assert chart(w, "x/acc")["zoom"] is None  # not synced yet
        w.page.dblclick('.chart[data-tag="x/loss"] canvas.overlay')
        wait_until(lambda: chart(w, "x/loss")["zoom"] is None, "the reset")
        # with "sync zoom", a drag on one chart zooms the x axis of all
        w.page.check("#sync-zoom")
        drag(w, "x/loss", 0.3, 0.6)
        synced = wait_until(lambda: chart(w, "x/acc")["zoom"], "the synced zoom")
        assert synced["x"] == chart(w, "x/loss")["zoom"]["x"]
        # double-click a run's name: only that run; again: all runs
        w.page.dblclick('.run[data-run="b"] .name')
        wait_until(lambda: [r["run"] for r in w.snapshot()["runs"] if r["visible"]] == ["b"], "only b")
        w.page.dblclick('.run[data-run="b"] .name')
        wait_until(lambda: len([r for r in w.snapshot()["runs"] if r["visible"]]) == 3, "all runs again")
        # log x: the axis is log10 of the step
        w.page.dblclick('.chart[data-tag="x/loss"] canvas.overlay')
        w.page.check("#log-x")
        wait_until(lambda: (c := chart(w, "x/loss"))["zoom"] is None and c["xRange"] == [0, math.log10(99)], "log x")
        assert w.page_errors == []


def test_wall_time_axis_and_tooltip_order(browser: Any, server: StreamServer) -> None:
    for run, value in (("low", 1.0), ("high", 3.0), ("mid", 2.0)):
        for step in range(10):
            server.publish(run, "loss", step, value, wall_time=1_700_000_000.0 + 10 * step)
    with open_page(browser, server.url + "/?smoothing=0&x=wall") as w:
        drawn = wait_drawn(w, "loss")
        assert drawn["xRange"] == [1_700_000_000.0, 1_700_000_090.0]  # wall-clock seconds
        w.page.select_option("#tooltip-sort", "descending")
        box = w.page.locator('.chart[data-tag="loss"] canvas.overlay').bounding_box()
        assert box is not None
        w.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        w.page.wait_for_selector("#tooltip:not([hidden])", timeout=20_000)
        order = w.page.eval_on_selector_all("#tooltip tr td:nth-child(2)", "tds => tds.map(td => td.textContent)")
        assert order == ["high", "mid", "low"]
        w.page.mouse.move(5, 5)
        w.page.select_option("#tooltip-sort", "ascending")
        w.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        w.wait_js("() => document.querySelector('#tooltip td:nth-child(2)').textContent === 'low'")
        assert w.page_errors == []


@pytest.mark.torch
def test_hparams_from_the_runs_list_are_shown_beside_the_run(browser: Any, tmp_path: Path) -> None:
    """Skips until the server lists ``hparams`` in ``/api/runs`` entries (another branch adds it)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(str(tmp_path / "exp" / "version_0"))
    exp, ssi, sei = hparams({"lr": 0.001, "batch_size": 32, "optimizer": "adam"}, {"hp_metric": 0.5})
    file_writer = writer._get_file_writer()
    for summary in (exp, ssi, sei):  # what Lightning's TensorBoardLogger.log_hyperparams writes
        file_writer.add_summary(summary, 0)
    writer.add_scalar("loss", 1.0, 0)
    writer.close()
    srv = StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)).start()
    try:
        srv.watch(tmp_path)
        entries = wait_until(
            lambda: (e := json.load(urllib.request.urlopen(srv.url + "/api/runs", timeout=10))) and e, "the run listed"
        )
        if "hparams" not in entries[0]:
            pytest.skip("this server does not list hparams in /api/runs yet")
        with open_page(browser, srv.url + "/") as w:
            wait_until(lambda: w.page.is_visible('.run[data-run="exp/version_0"] .hparams'), "the hparams line")
            text = w.page.text_content('.run[data-run="exp/version_0"] .hparams') or ""
            assert "lr=0.001" in text
            assert "batch_size=32" in text
            assert "optimizer=adam" in text
            assert w.snapshot()["runs"][0]["hparams"]["batch_size"] == 32
    finally:
        srv.stop()

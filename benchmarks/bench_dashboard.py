"""The dashboard in headless Chromium: first paint, visible charts complete, requests, zoom, frames.

Cases (the logdirs are generated once into ``benchmarks/data/``, framed event files written directly,
CRCs included, so 10 M points take about a minute instead of ten with ``SummaryWriter``):

* ``many``:   300 runs x 20 tags x 200 steps (1.2 M points): first paint, every chart in the viewport
  complete (its loaded data drawn), requests made until then.
* ``deep``:   1 run x 100 tags x 100,000 steps (10 M points): the same, plus a zoom into 1 % of the
  steps of the first chart: time until its exact points are drawn.
* ``stream``: 10 runs x 2 tags written live at 1,000 points/s in total: draw time and animation
  frame interval p99 over ``--stream-s`` seconds, the zoom window of a zoomed chart after it, and
  the tab's JS heap (Chrome DevTools protocol) at the start and the end; and what makes long frames
  (Long Animation Frames, the main thread's CPU time per second, with ``--trace-s`` a trace summary).

The server is ``lightning-stream serve LOGDIR`` in a subprocess; the page is opened once the server
holds every point (what is timed is the page, not the server's first scan). ``--tensorboard`` also
opens TensorBoard's own UI (its default Time Series dashboard, ``tensorboard --load_fast=true``) on the
same logdir in the same Chromium,
once its data server has loaded every run, and times it to network idle (no request for 500 ms,
which is then subtracted): TensorBoard's cards have no "complete" signal we could read.

    .venv/bin/python benchmarks/bench_dashboard.py [--quick] [--case many|deep|stream] [--tensorboard]
        [--stream-s S] [--trace-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent / "tests"))

import trace_summary  # noqa: E402
from browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402

from lightning_stream.tfrecord import frame  # noqa: E402

WALL0 = 1_700_000_000.0
VIEWPORT = {"width": 1400, "height": 900}


# ---------------------------------------------------------------- event files, written directly


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def scalar_record(tag: bytes, step: int, wall_time: float, value: float) -> bytes:
    """One framed ``Event`` holding ``Summary.Value(tag, simple_value)``, encoded by hand
    (what torch's SummaryWriter writes, byte for byte, without protobuf's per-call cost)."""
    val = b"\x0a" + _varint(len(tag)) + tag + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + _varint(len(val)) + val
    event = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + b"\x2a" + _varint(len(summary)) + summary
    return frame(event)


def version_record() -> bytes:
    event = b"\x09" + struct.pack("<d", WALL0) + b"\x1a\x0dbrain.Event:2"
    return frame(event)


def event_file(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / f"events.out.tfevents.{int(WALL0)}.bench.0.0"


def generate(name: str, runs: int, tags: int, steps: int) -> Path:
    """A logdir of runs x tags x steps (once: a marker says it is complete)."""
    logdir = DATA / f"dashboard-{name}-{runs}x{tags}x{steps}"
    marker = logdir / "COMPLETE"
    if marker.exists():
        return logdir
    shutil.rmtree(logdir, ignore_errors=True)
    started = time.perf_counter()
    print(f"generating {runs} runs x {tags} tags x {steps} steps in {logdir} ...", file=sys.stderr, flush=True)
    names = [f"train/metric_{t:02d}".encode() if t % 2 == 0 else f"val/metric_{t:02d}".encode() for t in range(tags)]
    for r in range(runs):
        with event_file(logdir / f"exp{r // 10}" / f"version_{r % 10}").open("wb") as f:
            f.write(version_record())
            chunk: list[bytes] = []
            for step in range(steps):
                wall = WALL0 + step * 0.1
                for t, tag in enumerate(names):
                    value = (1.0 + t) / (1.0 + 0.01 * step) * (1 + 0.02 * r) + 0.05 * ((step * 7919 + t) % 13)
                    chunk.append(scalar_record(tag, step, wall, value))
                if len(chunk) >= 50_000:
                    f.write(b"".join(chunk))
                    chunk.clear()
            f.write(b"".join(chunk))
    marker.write_text(json.dumps({"runs": runs, "tags": tags, "steps": steps}))
    print(f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return logdir


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def wait_for(check: Any, what: str, timeout_s: float = 600) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def serve(logdir: Path, runs: int, last_step: int) -> Iterator[str]:
    """``lightning-stream serve`` on a free port, once it holds every run's last step."""
    port = free_port()
    env = {**os.environ, "LIGHTNING_STREAM_REGISTRY_DIR": str(DATA / "registry")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_stream", "serve", str(logdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            entries = get_json(url + "/api/runs")
            return len(entries) >= runs and all(e["last_step"] >= last_step for e in entries)

        wait_for(ready, "the server to hold every point")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def tensorboard(logdir: Path, runs: int, tags: int) -> Iterator[str]:
    """TensorBoard (``--load_fast=true``) on a free port, once its scalars plugin lists every tag."""
    port = free_port()
    tb = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
    proc = subprocess.Popen(
        [tb, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1", "--load_fast=true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            listing = get_json(url + "/data/plugin/scalars/tags")
            return len(listing) >= runs and all(len(t) >= tags for t in listing.values())

        wait_for(ready, "TensorBoard to load every run")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- the page

PROGRESS = "() => window.lightningStream && window.lightningStream.progress()"


def open_dashboard(browser: Any, url: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url + "/?smoothing=0.6")
    return context, page, requests


def wait_page(page: Any, expression: str, timeout_s: float = 120) -> Any:
    return page.wait_for_function(expression, timeout=timeout_s * 1000, polling="raf").json_value()


def load_figures(browser: Any, url: str) -> dict[str, Any]:
    """First paint and all-visible-complete, in ms since navigation start, and requests until then."""
    context, page, requests = open_dashboard(browser, url)
    try:
        # the page's own time of its first draw (older pages: the poll's time, which is late when the page
        # drew before goto() returned and the poll started)
        first = wait_page(
            page, f"() => {{ const p = ({PROGRESS})(); return p && p.draws > 0 && (p.firstDrawAt || p.now); }}"
        )
        done = wait_page(
            page, f"() => {{ const p = ({PROGRESS})(); return p && p.inView > 0 && p.complete === p.inView && p; }}"
        )
        api = [u for u in requests if "/static/" not in u and not u.rstrip("/").endswith(str(url.rsplit(":", 1)[1]))]
        return {
            "first_paint_ms": first,
            "complete_ms": done["now"],
            "charts_in_view": done["inView"],
            "requests_total": len(requests),
            "requests_data": len(api),
            "page": page,
            "context": context,
        }
    except Exception:
        context.close()
        raise


def zoom_latency(page: Any, tag: str, lo: int, hi: int) -> float:
    """ms from a zoom (as a drag ends) until the chart has drawn the window's exact points."""
    started = page.evaluate(
        "([tag, lo, hi]) => { const t = performance.now(); window.lightningStream.zoom(tag, [lo, hi]); return t; }",
        [tag, lo, hi],
    )
    done = wait_page(
        page, f"() => {{ const p = ({PROGRESS})(); return p.complete === p.inView && performance.now(); }}"
    )
    return float(done - started)


def tensorboard_figures(browser: Any, url: str) -> dict[str, Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        # its default dashboard, Time Series (the legacy #scalars page leaves runs past the first
        # few dozen unselected, so with 300 runs its charts stay empty)
        page.goto(url + "/#timeseries")
        page.wait_for_load_state("networkidle", timeout=300_000)
        idle = page.evaluate("() => performance.now()") - 500
        first = page.evaluate(
            "() => (performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint') || {}).startTime"
        )
        data = [u for u in requests if "/data/" in u]
        return {
            "first_contentful_paint_ms": first,
            "network_idle_ms": idle,
            "requests_total": len(requests),
            "requests_data": len(data),
        }
    finally:
        context.close()


# ---------------------------------------------------------------- streaming


def stream_case(browser: Any, seconds: float, rate: int, trace_s: float = 0.0) -> dict[str, Any]:
    """10 runs x 2 tags written live (rate points/s in total) while the page shows them, one chart zoomed.

    What makes long frames: the Long Animation Frames API (frames > 50 ms, with the scripts that ran in
    them), the main thread's CPU time per second by kind (Chrome DevTools protocol ``Performance``
    metrics: CPU, not wall time, so less sensitive to a shared machine) and, with ``trace_s``, a Chromium
    trace of the first ``trace_s`` seconds summarised by ``trace_summary.py`` (tasks > 16 ms and what was
    in them, GC)."""
    logdir = DATA / "dashboard-stream"
    shutil.rmtree(logdir, ignore_errors=True)
    runs, tags = 10, [b"train/loss", b"train/acc"]
    files = []
    for r in range(runs):
        f = event_file(logdir / f"run_{r}").open("ab")
        f.write(version_record())
        for step in range(100):
            for t, tag in enumerate(tags):
                f.write(scalar_record(tag, step, WALL0 + step, 1.0 / (1 + step) + t + r * 0.01))
        f.flush()
        files.append(f)
    stop = threading.Event()
    written = [100]

    def writer() -> None:
        per_round = runs * len(tags)
        interval = per_round / rate
        step = 100
        next_at = time.monotonic()
        while not stop.is_set():
            for r, f in enumerate(files):
                for t, tag in enumerate(tags):
                    f.write(scalar_record(tag, step, time.time(), 1.0 / (1 + step) + t + r * 0.01))
                f.flush()
            step += 1
            written[0] = step
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    with serve(logdir, runs, 99) as url:
        context, page, _ = open_dashboard(browser, url)
        thread = threading.Thread(target=writer, daemon=True)
        try:
            wait_page(
                page, f"() => {{ const p = ({PROGRESS})(); return p && p.inView > 0 && p.complete === p.inView; }}"
            )
            page.evaluate("() => window.lightningStream.zoom('train/loss', [20, 60])")
            wait_page(page, f"() => {{ const p = ({PROGRESS})(); return p.complete === p.inView; }}")
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def heap() -> float:
                cdp.send("HeapProfiler.collectGarbage")
                metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                return float(metrics["JSHeapUsedSize"]) / 2**20

            heap_before = heap()
            thread.start()
            page.evaluate(OBSERVE_FRAMES)
            busy = MainThreadTime(cdp)
            trace = None
            # the heap and the points held every 30 s: growth that follows the held points (capped per
            # series, loader.js HOLD_LIMIT) is the data; growth beyond it would be a leak
            samples: list[tuple[float, float, int]] = []
            t_start = time.monotonic()
            if trace_s > 0:
                browser.start_tracing(page=page, categories=trace_summary.CATEGORIES)
                time.sleep(min(trace_s, seconds))
                raw = browser.stop_tracing()
                (DATA / "stream-trace.json").write_bytes(raw)  # for chrome://tracing or Perfetto
                trace = trace_summary.summarize(json.loads(raw))
            while (left := seconds - (time.monotonic() - t_start)) > 0:
                time.sleep(min(30.0, left))
                if left > 30.0:
                    busy.pause()
                    samples.append((round(time.monotonic() - t_start), round(heap(), 1), held_points(page)))
                    busy.resume()
            busy.pause()
            frames = page.evaluate("() => window.__frames.slice(1)")
            loaf = page.evaluate("() => window.__loafSummary()")
            draws = page.evaluate("() => window.lightningStream.drawTimes().slice(window.__draws0)")
            snap = page.evaluate("() => window.lightningStream.snapshot()")
            heap_after = heap()
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(timeout=10)
            context.close()
            for f in files:
                f.close()
    zoomed = next(c for c in snap["charts"] if c["tag"] == "train/loss")
    return {
        "seconds": seconds,
        "rate": rate,
        "points_received": snap["pointsReceived"],
        "frame_interval_p99_ms": quantile(frames, 0.99),
        "frame_interval_p50_ms": quantile(frames, 0.5),
        "frames": len(frames),
        "frames_over_20ms": sum(1 for f in frames if f > 20),
        "frames_over_50ms": sum(1 for f in frames if f > 50),
        # load-insensitive: CPU time of the page's main thread (not wall time), and what kind of work
        "main_thread": busy.per_second(),
        "long_animation_frames": loaf,
        **({"trace": trace} if trace is not None else {}),
        "draw_p99_ms": quantile(draws, 0.99),
        "draws": len(draws),
        # per chart: draws since the page opened, and data redraws left out (nothing drawn had changed)
        "chart_draws": {c["tag"]: [c["draws"], c.get("skips")] for c in snap["charts"]},
        "zoom_after": zoomed["zoom"]["x"],
        "x_range_after": zoomed["xRange"],
        "heap_mib": [round(heap_before, 1), round(heap_after, 1)],
        "heap_every_30s": [f"{t}s {h} MiB {p} pts" for t, h, p in samples],
        "points_held": sum(s["points"] for c in snap["charts"] for s in c["series"]),
        "steps_written": written[0],
    }


# rAF intervals, and the Long Animation Frames (> 50 ms) with the scripts that ran in them, summed by
# script (invoker, function, file) so the page need not hold every entry for five minutes
OBSERVE_FRAMES = """() => {
  window.__frames = []; let last = performance.now();
  const tick = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick); window.__draws0 = window.lightningStream.drawTimes().length;
  const loaf = { count: 0, ms: 0, blockingMs: 0, renderMs: 0, styleLayoutMs: 0, scripts: {}, longest: [] };
  const file = (u) => (u || "").split("/").pop() || "?";
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      loaf.count += 1; loaf.ms += e.duration; loaf.blockingMs += e.blockingDuration;
      const end = e.startTime + e.duration;
      if (e.renderStart) loaf.renderMs += end - e.renderStart;
      if (e.styleAndLayoutStart) loaf.styleLayoutMs += end - e.styleAndLayoutStart;
      const parts = [];
      for (const s of e.scripts) {
        const key = `${s.invokerType} ${s.invoker} ${s.sourceFunctionName || ""} (${file(s.sourceURL)})`;
        const k = loaf.scripts[key] || (loaf.scripts[key] = { n: 0, ms: 0, layoutMs: 0 });
        k.n += 1; k.ms += s.duration; k.layoutMs += s.forcedStyleAndLayoutDuration;
        parts.push(`${key} ${s.duration.toFixed(0)}`);
      }
      loaf.longest.push([e.duration, parts.join("; ") || "(no script: rendering)"]);
      loaf.longest.sort((a, b) => b[0] - a[0]); loaf.longest.length = Math.min(loaf.longest.length, 5);
    }
  }).observe({ type: "long-animation-frame" });
  window.__loafSummary = () => ({
    count: loaf.count, ms: Math.round(loaf.ms), blocking_ms: Math.round(loaf.blockingMs),
    render_ms: Math.round(loaf.renderMs), style_layout_ms: Math.round(loaf.styleLayoutMs),
    top_scripts: Object.entries(loaf.scripts).sort((a, b) => b[1].ms - a[1].ms).slice(0, 8)
      .map(([k, v]) => `${Math.round(v.ms)} ms in ${v.n}: ${k}`),
    longest: loaf.longest.map(([ms, what]) => `${Math.round(ms)} ms: ${what}`),
  });
}"""

#: Performance.getMetrics durations (seconds, cumulative) worth a rate: ThreadTime is the main thread's
#: CPU time; the others are wall time of that kind of work on it
BUSY_METRICS = ("ThreadTime", "ProcessTime", "TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


class MainThreadTime:
    """Sums the page's main-thread time per second over the streaming, leaving out the benchmark's own
    probes (the forced GCs of the heap samples): ``pause()`` before them, ``resume()`` after."""

    def __init__(self, cdp: Any) -> None:
        self.cdp = cdp
        self.totals = dict.fromkeys(BUSY_METRICS, 0.0)
        self.seconds = 0.0
        self.resume()

    def _read(self) -> dict[str, float]:
        metrics = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
        return {k: float(metrics.get(k, 0.0)) for k in BUSY_METRICS}

    def resume(self) -> None:
        self.since = (time.monotonic(), self._read())

    def pause(self) -> None:
        t0, before = self.since
        now = self._read()
        self.seconds += time.monotonic() - t0
        for k in BUSY_METRICS:
            self.totals[k] += now[k] - before[k]

    def per_second(self) -> dict[str, float]:
        """ms per second of each kind (``ThreadTime``: main-thread CPU, ``ProcessTime``: the renderer's)."""
        return {f"{k}_ms_per_s": round(1000 * v / max(self.seconds, 1e-9), 1) for k, v in self.totals.items()}


def held_points(page: Any) -> int:
    """Points the page holds in all its series (live series are capped, loader.js HOLD_LIMIT)."""
    held: int = page.evaluate(
        "() => window.lightningStream.snapshot().charts.reduce((a, c) => a + c.series.reduce((b, s) => b + s.points, 0), 0)"
    )
    return held


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- chart library comparison

STATIC = HERE.parent / "lightning_stream" / "static"
UPLOT = DATA / "uplot" / "package" / "dist"


@contextmanager
def serve_chart_bench() -> Iterator[str]:
    """/static (the dashboard), /bench (benchmarks/chart_libs) and /uplot (scripts/fetch-uplot.sh) over HTTP."""
    import functools
    import http.server

    roots = {"/static/": STATIC, "/bench/": HERE / "chart_libs", "/uplot/": UPLOT}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            for prefix, root in roots.items():
                if path.startswith(prefix):
                    return str(root / path[len(prefix) :].split("?")[0])
            return str(HERE / "chart_libs" / "index.html")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(HERE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def chart_libs(browser: Any) -> dict[str, Any]:
    """Redraw times of the dashboard's chart and of uPlot on the same data (ms)."""
    if not (UPLOT / "uPlot.iife.min.js").exists():
        subprocess.run(["bash", str(HERE.parent / "scripts" / "fetch-uplot.sh")], check=True)
    with serve_chart_bench() as url:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.goto(url + "/")
            page.wait_for_function("window.chartBench !== undefined", timeout=60_000)
            result: dict[str, Any] = page.evaluate("() => window.chartBench.run(30)")
        finally:
            context.close()
    return result


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small logdirs, a few seconds of streaming")
    parser.add_argument("--case", choices=["many", "deep", "stream"], action="append")
    parser.add_argument("--tensorboard", action="store_true", help="also time TensorBoard's UI on the same logdirs")
    parser.add_argument("--stream-s", type=float, default=10.0)
    parser.add_argument(
        "--trace-s",
        type=float,
        default=0.0,
        help="stream case: record a Chromium trace of the first S seconds and summarise it (trace_summary.py)",
    )
    parser.add_argument(
        "--chart-libs", action="store_true", help="only compare redraw times: our canvas chart vs uPlot (npm)"
    )
    args = parser.parse_args()
    cases = args.case or ["many", "deep", "stream"]
    executable = chromium_executable()
    if executable is None:
        raise SystemExit("chromium not found: make browser-deps")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            if args.chart_libs:
                cases = []
                results["chart_libs"] = chart_libs(browser)
            for case in cases:
                if case == "stream":
                    results[case] = stream_case(browser, 3.0 if args.quick else args.stream_s, 1000, args.trace_s)
                    continue
                runs, tags, steps = {"many": (300, 20, 200), "deep": (1, 100, 100_000)}[case]
                if args.quick:
                    runs, tags, steps = {"many": (30, 20, 200), "deep": (1, 20, 10_000)}[case]
                logdir = generate(case, runs, tags, steps)
                with serve(logdir, runs, steps - 1) as url:
                    figures = load_figures(browser, url)
                    page, context = figures.pop("page"), figures.pop("context")
                    try:
                        if case == "deep":
                            lo = steps // 2
                            tag = "train/metric_00"
                            figures["zoom_to_exact_ms"] = [
                                round(
                                    zoom_latency(page, tag, lo + k * steps // 50, lo + k * steps // 50 + steps // 100),
                                    1,
                                )
                                for k in range(3)
                            ]
                    finally:
                        context.close()
                    results[case] = figures
                if args.tensorboard:
                    with tensorboard(logdir, runs, tags) as tb_url:
                        results[f"{case} (TensorBoard)"] = tensorboard_figures(browser, tb_url)
        finally:
            browser.close()
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2), os.cpu_count()]
    print(json.dumps(results, indent=1, default=lambda v: round(v, 1) if isinstance(v, float) else str(v)))
    for case, libs in results.get("chart_libs", {}).items():
        row = "  ".join(
            f"{lib}: first {r['first']:.1f}, redraw p50 {r['redraw']['p50']:.1f} p95 {r['redraw']['p95']:.1f} ms"
            for lib, r in libs.items()
        )
        print(f"{case}\n    {row}")
    for name, r in results.items():
        if isinstance(r, dict) and name != "chart_libs":
            print(f"{name:28s} " + "  ".join(f"{k}={_fmt(v)}" for k, v in r.items()))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


if __name__ == "__main__":
    main()

/* lightning-stream dashboard: boot and wiring. Native ES modules, no build step, no dependency.
 *
 * Performance rules, because a page can show 300 runs x 20 tags or 100 tags x 100,000 points:
 *   - a chart loads and draws only while on screen (IntersectionObserver), one request per chart;
 *   - each series keeps its points in typed arrays that grow by doubling (no object per point);
 *   - a chart is redrawn only when its data or the view changed, at most once per animation frame
 *     (and at most 10 times a second for new data), within a frame budget;
 *   - lines are drawn decimated per pixel column, so a redraw costs O(width) canvas work.
 * Tests read `window.lightningStream` (read-only snapshots) instead of poking at internals.
 */

import { requestStats } from "./api.js";
import { addTools, refreshTools } from "./cardtools.js";
import { buildChart, drawChart, readTheme, resizeChart } from "./chart.js";
import { bindControls } from "./controls.js";
import { initLayout, placeChart, refreshLayout } from "./layout.js";
import { firstPaint, requestChart, requestWindow } from "./loader.js";
import { charts, hooks, markAllDirty, runVisible, runs, series, seriesKey, setFilters, state, view } from "./model.js";
import { buildRunRow, flushRunRows, initSidebar, lifecycle, pointsPerSecond, refreshRunFilter, renderStatus } from "./sidebar.js";
import { smoothed } from "./smooth.js";
import { parseView, prefsOf, viewFromPrefs, viewToParams } from "./state.js";
import { startSync } from "./sync.js";
import { drawHover } from "./tooltip.js";
import { bindZoom } from "./zoom.js";

const STORE_KEY = "lightning-stream.view";
const FRAME_BUDGET_MS = 12; // past this, the other dirty charts wait for the next frame
const DATA_REDRAW_MS = 100; // new points redraw a chart at most 10 times a second
const tooltip = document.getElementById("tooltip");

// ---------------------------------------------------------------- view: preferences, then the URL

function loadView() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
  } catch (_) {
    saved = {};
  }
  if (saved.theme === "dark" || saved.theme === "light") document.documentElement.dataset.theme = saved.theme;
  // URL parameters win over preferences, so a link (or a notebook cell) opens the view it names.
  Object.assign(view, parseView(new URLSearchParams(location.search), viewFromPrefs(saved)));
  setFilters();
}

let saveTimer = null;

function saveView() {
  if (saveTimer !== null) return;
  saveTimer = setTimeout(() => {
    saveTimer = null;
    view.hidden = [...runs.values()].filter((r) => !r.checked).map((r) => r.name);
    const params = viewToParams(view, new URLSearchParams(location.search)).toString();
    const url = `${location.pathname}${params ? `?${params}` : ""}${location.hash}`;
    if (url !== `${location.pathname}${location.search}${location.hash}`) history.replaceState(null, "", url);
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(prefsOf(view, document.documentElement.dataset.theme)));
    } catch (_) {
      /* storage disabled: preferences are just not remembered */
    }
  }, 100);
}

function changed(what) {
  if (what === "filters") {
    setFilters();
    refreshRunFilter();
  }
  if (what === "x") {
    view.zoom = {}; // a window in steps means nothing in seconds
    for (const chart of charts.values()) chart.window = null;
  }
  if (what === "theme") readTheme();
  for (const chart of charts.values()) refreshTools(chart); // the cards' switches show the global ones
  refreshLayout();
  markAllDirty();
  saveView();
}

// ---------------------------------------------------------------- zoom

/* Apply a zoom window (null resets). A drag asks for the window's exact points at once; the wheel
 * (`debounce`) waits for the gesture to settle. */
function setZoom(chart, win, debounce = false) {
  const targets = view.syncZoom ? [...charts.values()] : [chart];
  for (const c of targets) {
    if (win) view.zoom[c.tag] = { x: win.x.slice(), y: c === chart ? win.y : (view.zoom[c.tag] || {}).y || null };
    else delete view.zoom[c.tag];
    if (!win) c.window = null;
    c.dirty = true;
    c.urgent = true;
    refreshTools(c);
    if (win && c.onScreen) scheduleWindow(c, debounce ? 60 : 0);
  }
  scheduleFrame();
  saveView();
}

function scheduleWindow(chart, delayMs) {
  if (chart.windowTimer) clearTimeout(chart.windowTimer);
  chart.windowTimer = null;
  if (delayMs === 0) {
    requestWindow(chart);
    return;
  }
  chart.windowTimer = setTimeout(() => {
    chart.windowTimer = null;
    requestWindow(chart);
  }, delayMs);
}

// ---------------------------------------------------------------- cards

/* A card's tools (7 buttons and the y-range form, 220 elements for 20 cards) are added once the first
 * chart is on screen (or after TOOLS_LATEST_MS), so the first frames style and lay out the plots only. */
const TOOLS_LATEST_MS = 1000;
let toolsWaiting = []; // cards built before then; null once every card gets its tools at once

function equip(chart) {
  addTools(chart, {
    setZoom,
    changed: (c) => {
      refreshTools(c);
      c.dirty = c.urgent = true;
      scheduleFrame();
      saveView();
    },
  });
}

function equipWaiting() {
  if (toolsWaiting === null) return;
  const list = toolsWaiting;
  toolsWaiting = null;
  for (const chart of list) equip(chart);
}

function makeChart(tag) {
  const chart = buildChart(tag);
  if (toolsWaiting === null) equip(chart);
  else toolsWaiting.push(chart);
  placeChart(chart);
  resizeObserver.observe(chart.plot);
  visibilityObserver.observe(chart.card);
  bindZoom(chart, { setZoom, redrawHover: (c) => drawHover(c, tooltip) });
  return chart;
}

// ---------------------------------------------------------------- scheduling

let frameQueued = false;
let wakeTimer = null;
let wakeAt = Infinity;

/* Ask for a frame, unless every chart waiting to be drawn is a streaming one inside its
 * DATA_REDRAW_MS: then one timer asks when the first of them is due. Streamed messages come 50 to
 * 200 times a second; without this each one ran a whole frame (animation callbacks, style, layout,
 * paint, commit) that had nothing to draw. */
function scheduleFrame() {
  if (frameQueued) return;
  const wake = state.layoutDirty ? 0 : nextDue();
  const now = performance.now();
  if (wake > now && wake !== Infinity) {
    if (wake < wakeAt) {
      if (wakeTimer !== null) clearTimeout(wakeTimer);
      wakeAt = wake;
      wakeTimer = setTimeout(() => {
        wakeTimer = null;
        wakeAt = Infinity;
        scheduleFrame();
      }, wake - now);
    }
    return;
  }
  frameQueued = true;
  requestAnimationFrame(frame);
}

/* When the first chart that needs drawing may be drawn: 0 (now) for a view change (urgent), the end
 * of its DATA_REDRAW_MS for a streaming chart, and 0 too when no chart needs drawing (a caller that
 * asks for a frame then has another reason: it gets one, as it always did). */
function nextDue() {
  let due = Infinity;
  for (const chart of charts.values()) {
    if (!chart.dirty || chart.card.hidden || !chart.onScreen) continue;
    if (chart.urgent) return 0;
    due = Math.min(due, chart.drawnAt + DATA_REDRAW_MS);
  }
  return due === Infinity ? 0 : due;
}

let drawCursor = 0; // round robin: charts left over by the budget go first next frame

function frame() {
  frameQueued = false;
  if (state.layoutDirty) {
    state.layoutDirty = false;
    refreshLayout();
  }
  const list = Array.from(charts.values());
  const t0 = performance.now();
  let wake = Infinity;
  let dataDrawn = false;
  let deferred = -1;
  for (let k = 0; k < list.length; k++) {
    const index = (drawCursor + k) % list.length;
    const chart = list[index];
    if (!chart.dirty || chart.card.hidden || !chart.onScreen) continue;
    const dataOnly = !chart.urgent;
    if (dataOnly && t0 - chart.drawnAt < DATA_REDRAW_MS) {
      wake = Math.min(wake, chart.drawnAt + DATA_REDRAW_MS);
      continue;
    }
    // One redraw for new points per frame: the canvas is rasterised in the frame's commit (on the
    // main thread without a GPU), which the script time below does not see; streaming charts that
    // fell due together take turns over the next frames instead of all landing in one.
    if (dataOnly && dataDrawn) {
      if (deferred < 0) deferred = index;
      continue;
    }
    chart.dirty = false;
    chart.urgent = false;
    chart.drawnAt = t0;
    const d0 = performance.now();
    if (drawChart(chart)) {
      if (firstDrawAt === null && state.draws > 0) firstDrawAt = performance.now();
      frameTimes.push(performance.now() - d0);
      if (dataOnly) dataDrawn = true;
    }
    if (frameTimes.length > 2000) frameTimes.splice(0, 1000);
    if (chart.hover || chart.drag) drawHover(chart, tooltip);
    if (chart.zoom() && !chart.window && chart.loadState === "loaded" && !chart.windowKeyInFlight && !chart.windowTimer) scheduleWindow(chart, 0);
    if (performance.now() - t0 > FRAME_BUDGET_MS) {
      drawCursor = index + 1;
      scheduleFrame(); // the rest next frame: input and scrolling stay responsive
      return;
    }
  }
  if (deferred >= 0) {
    drawCursor = deferred; // the first chart that waited goes first
    frameQueued = true;
    requestAnimationFrame(frame);
  } else if (wake !== Infinity) scheduleFrame(); // sets the timer for the first chart due
}

const frameTimes = []; // ms per chart draw, for the benchmark
let firstDrawAt = null; // performance.now() when the first chart with data was drawn (the benchmark's first paint)

const resizeObserver = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = charts.get(entry.target.parentElement.dataset.tag);
    if (chart && resizeChart(chart, entry.contentRect.width, entry.contentRect.height)) scheduleFrame();
  }
});

const visibilityObserver = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      const chart = charts.get(entry.target.dataset.tag);
      if (!chart) continue;
      chart.onScreen = entry.isIntersecting;
      if (!chart.onScreen) continue;
      if (state.loaded) requestChart(chart);
      if (chart.dirty) scheduleFrame();
    }
  },
  { rootMargin: "200px 0px" },
);

let statusQueued = false;

function scheduleStatus() {
  if (!statusQueued) {
    statusQueued = true;
    setTimeout(() => {
      statusQueued = false;
      renderStatus();
    }, 0);
  }
}

// ---------------------------------------------------------------- read-only state for tests

function seriesSnapshot(s) {
  return {
    run: s.run.name,
    tag: s.tag,
    steps: Array.from(s.steps.subarray(0, s.n)),
    values: Array.from(s.values.subarray(0, s.n)),
    wallTimes: Array.from(s.walls.subarray(0, s.n)),
    decimated: s.decimated,
  };
}

function chartSnapshot(c) {
  const win = c.window;
  return {
    tag: c.tag,
    visible: !c.card.hidden,
    onScreen: c.onScreen,
    loadState: c.loadState,
    loads: c.loads,
    draws: c.draws,
    skips: c.skips,
    drawnPoints: c.drawnPoints || 0,
    clipped: c.clipped,
    pinned: view.pins.includes(c.tag),
    zoom: c.zoom(),
    window: win ? { from: win.from, to: win.to, loads: c.windowLoads, ms: win.ms, runs: Object.fromEntries([...win.data].map(([r, d]) => [r, Array.from(d.steps)])) } : null,
    xRange: c.layout ? [c.layout.x0, c.layout.x1] : null,
    yRange: c.layout ? [c.layout.y1, c.layout.y0] : null,
    series: c.series.map((s) => ({ run: s.run.name, points: s.n, lastStep: s.n ? s.steps[s.n - 1] : null })),
  };
}

window.lightningStream = Object.freeze({
  /** Plain-JSON copy of the dashboard state: safe to return from page.evaluate(). */
  snapshot() {
    return {
      transport: view.transport,
      streamState: state.streamState,
      restState: state.restState,
      lastSeq: state.lastSeq,
      loaded: state.loaded,
      reloads: state.reloads,
      reconnects: state.reconnects,
      draws: state.draws,
      pointsReceived: state.pointsReceived,
      messagesReceived: state.messagesReceived,
      pointsPerSecond: pointsPerSecond(Date.now()),
      lastUpdate: state.lastUpdate,
      smoothing: view.smoothing,
      logScale: view.logScale,
      xMode: view.xMode,
      runFilter: view.runFilter,
      tagFilter: view.tagFilter,
      requests: { ...requestStats },
      errors: state.errors.slice(),
      runs: Array.from(runs.values(), (r) => ({
        run: r.name,
        color: r.color,
        state: r.state,
        lifecycle: lifecycle(r),
        checked: r.checked,
        visible: runVisible(r),
        lastStep: r.lastStep,
        hparams: r.hparams,
      })),
      charts: Array.from(charts.values(), chartSnapshot),
    };
  },
  /** Points held for one series (copies), or null. */
  series(run, tag) {
    const s = series.get(seriesKey(run, tag));
    return s ? seriesSnapshot(s) : null;
  },
  /** The smoothed values the chart draws for one series at the current smoothing, or null. */
  smoothed(run, tag) {
    const s = series.get(seriesKey(run, tag));
    if (!s) return null;
    return view.smoothing > 0 ? Array.from(smoothed(s, view.smoothing).subarray(0, s.n)) : Array.from(s.values.subarray(0, s.n));
  },
  /** Cheap progress probe for the benchmark: cards inside the viewport, and how many of them hold
   * their loaded data on screen (drawn after the load, and after the zoom window's load if zoomed), and
   * when the first chart with data was drawn (a poll may start after that: the page can draw before
   * Playwright's `goto` returns). */
  progress() {
    let inView = 0;
    let complete = 0;
    for (const c of charts.values()) {
      if (c.card.hidden) continue;
      const r = c.card.getBoundingClientRect();
      if (r.bottom <= 0 || r.top >= innerHeight) continue;
      inView += 1;
      const z = c.zoomSteps();
      const windowDone = !z || (c.window && c.window.from === z[0] && c.window.to === z[1] && c.drawnAt >= c.window.at);
      if (c.loadState === "loaded" && c.drawnAt >= c.loadedAt && windowDone) complete += 1;
    }
    return { draws: state.draws, firstDrawAt, inView, complete, requests: { ...requestStats }, now: performance.now() };
  },
  /** Per-draw times in ms (the benchmark's frame-time figure). */
  drawTimes() {
    return frameTimes.slice();
  },
  /** Zoom a chart to an x window (and optional y), as a drag would (tests and the benchmark). */
  zoom(tag, x, y = null) {
    const chart = charts.get(tag);
    if (chart) setZoom(chart, x ? { x, y } : null);
  },
});

// ---------------------------------------------------------------- boot

hooks.buildRun = buildRunRow;
hooks.buildChart = makeChart;
hooks.scheduleFrame = scheduleFrame;
hooks.statusChanged = scheduleStatus;
hooks.layoutChanged = () => {
  refreshLayout();
  scheduleFrame();
};
initSidebar({
  runsChanged: () => changed("runs"),
  colorChanged: () => changed("colors"),
  rowsBuilt: scheduleStatus,
});
firstPaint.then(() => {
  flushRunRows();
  equipWaiting();
});
setTimeout(equipWaiting, TOOLS_LATEST_MS); // no chart loads (an empty logdir, a filter that hides all)
initLayout(document.getElementById("charts"), document.getElementById("empty"), (group) => {
  for (const chart of group.charts) chart.dirty = chart.urgent = true;
  refreshLayout();
  scheduleFrame();
});
loadView();
bindControls(changed);
readTheme();
refreshLayout();
setInterval(renderStatus, 500);
startSync();

/* Keeps the held series in step with the server, lazily: a chart loads its history (all runs, one
 * GET /api/series for its tag, decimated to about one min/max bucket per pixel column) only when it
 * comes on screen, and a zoomed chart loads the exact points of its window. Live points from the
 * stream go to loaded charts; a chart whose history is in flight buffers them and keeps those
 * newer than the answer's `seq` (so nothing is lost or doubled); an unloaded chart drops them
 * (its history, loaded later, holds them). */

import { getSeries as fetchSeries } from "./api.js";
import { escapeGlob } from "./glob.js";
import { charts, getSeries, hooks, noteError, rateBuckets, state, touched } from "./model.js";
import { appendColumns, clearSeries, compact, num, replaceColumns, resetFrom } from "./store.js";

const HOLD_LIMIT = 40000; // points per series before older ones are summarised (store.compact)
const HOLD_RAW = 10000; // newest points kept exact
const HOLD_BUCKETS = 5000; // older points become min/max of this many buckets
const CONCURRENCY = 2; // the server answers one at a time: more in flight only delays the first chart
const queue = []; // charts waiting for a history request, in page order
let inFlight = 0;
/* The page's first history request goes alone: a second answer (megabytes with 300 runs) encoded
 * and parsed meanwhile would delay the first chart's bytes and its first draw. */
let firstDone = false;

/** Points per series to ask for: about two (a min and a max) per pixel column of the plot. */
export function maxPointsFor(chart) {
  const w = chart.width > 0 ? chart.width : 600;
  return Math.max(400, Math.round(w * 2));
}

/** Ask for the chart's history (once; again after `resetCharts`). */
export function requestChart(chart) {
  if (chart.loadState !== "unloaded" || chart.queued) return;
  chart.queued = true;
  queue.push(chart);
  pump();
}

function pump() {
  while (inFlight < (firstDone ? CONCURRENCY : 1) && queue.length) {
    // the chart highest on the page first: the top of the screen fills in first
    queue.sort((a, b) => a.order() - b.order());
    const chart = queue.shift();
    chart.queued = false;
    if (chart.loadState !== "unloaded" || !chart.onScreen) continue;
    inFlight += 1;
    loadChart(chart).finally(() => {
      inFlight -= 1;
      firstDone = true;
      pump();
    });
  }
}

async function loadChart(chart) {
  chart.loadState = "loading";
  const generation = chart.generation;
  let body;
  try {
    body = await fetchSeries({ run: "*", tag: escapeGlob(chart.tag), max_points: maxPointsFor(chart) });
  } catch (err) {
    noteError(`loading ${chart.tag}: ${err.message}`);
    for (const s of chart.series) s.pending = [];
    if (chart.generation === generation) {
      chart.loadState = "unloaded";
      setTimeout(() => chart.onScreen && requestChart(chart), 2000); // the health probe shows why
    }
    return;
  }
  if (chart.generation !== generation) return; // reset meanwhile: a newer load follows
  const seq = num(body.seq);
  const answered = new Set();
  for (const entry of body.series) {
    if (entry.tag !== chart.tag || typeof entry.run !== "string") continue;
    const s = getSeries(entry.run, entry.tag);
    answered.add(s);
    replaceColumns(s, entry.steps || [], entry.wall_times || [], entry.values || []);
    s.decimated = !!entry.decimated;
    s.loadedSeq = Number.isFinite(seq) ? seq : -Infinity;
    noteNewest(s);
  }
  for (const s of chart.series) {
    if (!answered.has(s)) {
      clearSeries(s); // the server no longer holds it (or it was born after the answer)
      if (Number.isFinite(seq)) s.loadedSeq = seq;
    }
    for (const p of s.pending) {
      if (p.cut !== undefined) resetFrom(s, p.seq, p.cut);
      else if (p.seq === null || p.seq > s.loadedSeq) appendColumns(s, p.steps, p.walls, p.values);
    }
    s.pending = [];
    s.loadState = "loaded";
    touched(s);
  }
  chart.loadState = "loaded";
  chart.loadedAt = performance.now();
  chart.loads += 1;
  chart.urgent = true;
  hooks.scheduleFrame();
}

/** "Last update" before any live point: when the newest loaded point was written. */
function noteNewest(s) {
  if (s.n === 0) return;
  const newest = s.walls[s.n - 1] * 1000;
  if (Number.isFinite(newest) && (state.lastUpdate === null || newest > state.lastUpdate)) {
    state.lastUpdate = Math.min(newest, Date.now());
  }
}

/** Forget what was loaded (a reset or a restarted server): charts keep drawing what they hold until
 * their new history replaces it, and load again when on screen. */
export function resetCharts() {
  for (const chart of charts.values()) {
    chart.generation += 1;
    chart.loadState = "unloaded";
    chart.window = null;
    for (const s of chart.series) s.pending = [];
    if (chart.onScreen && !chart.card.hidden) requestChart(chart);
  }
}

/** A reset scoped to one series ({run, tag, from_step}): its held points from from_step on go; the
 * rewritten points follow on the stream. Returns false for a reset of the whole stream. */
export function seriesReset(seq, payload) {
  if (!payload || typeof payload.run !== "string" || typeof payload.tag !== "string") return false;
  const from = num(payload.from_step);
  if (!Number.isFinite(from)) return false;
  const s = getSeries(payload.run, payload.tag);
  const chart = s.chart;
  if (chart.loadState === "loading") s.pending.push({ seq, cut: from }); // replayed after the answer
  else if (chart.loadState === "loaded" && resetFrom(s, seq, from)) {
    chart.window = null; // the exact window points are stale: asked again at the next draw
    touched(s);
    hooks.scheduleFrame();
  }
  return true;
}

/** Stream columns [{run, tag, steps, wall_times, values}] of message `seq`. */
export function ingest(seq, columns) {
  const now = Date.now();
  let count = 0;
  for (const c of columns) {
    if (!c || typeof c.run !== "string" || typeof c.tag !== "string" || !Array.isArray(c.steps)) continue;
    const s = getSeries(c.run, c.tag);
    const chart = s.chart;
    count += c.steps.length;
    if (chart.loadState === "loading") {
      s.pending.push({ seq, steps: c.steps, walls: c.wall_times || [], values: c.values || [] });
    } else if (chart.loadState === "loaded") {
      if (seq !== null && seq <= s.loadedSeq) continue; // already in the loaded history
      appendColumns(s, c.steps, c.wall_times || [], c.values || []);
      compact(s, HOLD_LIMIT, HOLD_RAW, HOLD_BUCKETS); // a long live run: memory stays bounded
      s.loadState = "loaded";
    } else {
      s.missed = true; // not loaded yet: the history, when loaded, holds these points
    }
    touched(s);
  }
  if (count === 0) return;
  state.pointsReceived += count;
  state.lastUpdate = now;
  rateBuckets.push([now, count]);
  hooks.scheduleFrame();
}

/* A zoomed chart's window data ends where its answer ended; points streamed later are drawn from
 * the held series (chart.js draws the held tail past the window data's last step). */

/** Load the exact points of the chart's zoom window (debounced by the caller), if not held yet. */
export async function requestWindow(chart) {
  const zoom = chart.zoomSteps();
  if (!zoom) {
    chart.window = null;
    return;
  }
  const [a, b] = zoom;
  const maxPoints = maxPointsFor(chart);
  const key = `${a},${b},${maxPoints}`;
  if (chart.window && chart.window.key === key) return;
  if (chart.windowKeyInFlight === key) return;
  chart.windowKeyInFlight = key;
  const started = performance.now();
  let body;
  try {
    body = await fetchSeries({ run: "*", tag: escapeGlob(chart.tag), start_step: a, end_step: b, max_points: maxPoints });
  } catch (err) {
    noteError(`zoom ${chart.tag}: ${err.message}`);
    return;
  } finally {
    if (chart.windowKeyInFlight === key) chart.windowKeyInFlight = null;
  }
  const current = chart.zoomSteps();
  if (!current || current[0] !== a || current[1] !== b) return; // zoomed elsewhere meanwhile
  const data = new Map();
  for (const entry of body.series) {
    if (entry.tag !== chart.tag) continue;
    const cols = {
      steps: Float64Array.from(entry.steps || [], num),
      walls: Float64Array.from(entry.wall_times || [], num),
      values: Float64Array.from(entry.values || [], num),
      decimated: !!entry.decimated,
    };
    data.set(entry.run, cols);
  }
  chart.window = { key, from: a, to: b, data, ms: performance.now() - started, at: performance.now() };
  chart.windowLoads += 1;
  chart.urgent = true;
  chart.dirty = true;
  hooks.scheduleFrame();
}

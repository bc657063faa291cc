/* Keeps the held series in step with the server, lazily: a chart loads its history (all runs, one
 * GET /api/series for its tag, decimated to about one min/max bucket per pixel column) only when it
 * comes on screen, and a zoomed chart loads the exact points of its window. Live points from the
 * stream go to loaded charts; a chart whose history is in flight buffers them and keeps those
 * newer than the answer's `seq` (so nothing is lost or doubled); an unloaded chart drops them
 * (its history, loaded later, holds them). */

import { earlySeries, embeddedSeries, getSeries as fetchSeries } from "./api.js";
import { escapeGlob } from "./glob.js";
import { charts, getSeries, hooks, noteError, rateBuckets, state, touched } from "./model.js";
import { appendColumns, clearSeries, compact, num, replaceColumns, resetFrom } from "./store.js";

const HOLD_LIMIT = 40000; // points per series before older ones are summarised (store.compact)
const HOLD_RAW = 10000; // newest points kept exact
const HOLD_BUCKETS = 5000; // older points become min/max of this many buckets
const CONCURRENCY = 2; // the server answers one at a time: more in flight only delays the first chart
const BATCH_TAGS = 8; // charts per request past the first (the server takes up to 64 tag= parameters)
const BATCH_POINTS = 130000; // ... and about this many points: one answer is parsed while the next is written
const queue = []; // charts waiting for a history request, in page order
let inFlight = 0;
let viewportBusy = 0; // loads of charts inside the viewport (chart.inViewport, sync.js) not yet on screen
let firstSent = false; // the page's first request is the top chart alone, so it paints first
let painted = null;
/* Resolved two frames after the first answer was applied (its chart is drawn in the first of them):
 * the answers of the other requests are parsed after that, so a long parse (megabytes of JSON) holds
 * back neither that frame nor the next. */
export const firstPaint = new Promise((resolve) => {
  painted = resolve;
});

function afterTwoFrames(fn) {
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(fn, 0)));
}

/* Once every loaded chart in the viewport has drawn its data (a draw per chart per frame, within a
 * frame budget), and the page is idle: the margin's cards are a prefetch for scrolling. */
function whenViewportDrawn(fn) {
  const check = () => {
    for (const c of charts.values()) {
      if (c.inViewport && c.onScreen && !c.card.hidden && c.loadState === "loaded" && !(c.drawnAt >= c.loadedAt)) {
        requestAnimationFrame(check);
        return;
      }
    }
    afterTwoFrames(() => whenIdle(fn));
  };
  requestAnimationFrame(check);
}

function whenIdle(fn) {
  if (typeof requestIdleCallback === "function") requestIdleCallback(fn, { timeout: 1000 });
  else setTimeout(fn, 50);
}

function openGate() {
  afterTwoFrames(painted);
}

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
  if (queue.length === 1) queueMicrotask(pump); // after the caller has queued every chart it wants now
}

/* About how many points a chart's history holds: per series, its run's last listed step + 1 (steps
 * usually start at 0), capped by max_points. An estimate, only used to size a request. */
function estimatePoints(chart, maxPoints) {
  let total = 0;
  for (const s of chart.series) {
    const last = s.run.listedStep;
    total += Number.isFinite(last) && last >= 0 ? Math.min(maxPoints, last + 1) : maxPoints;
  }
  return total;
}

/** Charts for the next request: the top chart alone first, then the next ones on the page together. */
export function takeBatch(pending, first, limits = { tags: BATCH_TAGS, points: BATCH_POINTS }) {
  const batch = [];
  let points = 0;
  while (pending.length) {
    const chart = pending[0];
    if (chart.loadState !== "unloaded" || !chart.onScreen) {
      pending.shift();
      chart.queued = false;
      continue;
    }
    const cost = estimatePoints(chart, maxPointsFor(chart));
    const full = first || batch.length >= limits.tags || points + cost > limits.points;
    if (batch.length && (full || !!chart.inViewport !== !!batch[0].inViewport)) break; // the viewport's own first
    pending.shift();
    chart.queued = false;
    batch.push(chart);
    points += cost;
  }
  return batch;
}

/* Cards sit in page order in one container (layout.js), so document order is page order, and
 * comparing it needs no layout (offsetTop would force one). */
function pageOrder(a, b) {
  if (a.card === b.card) return 0;
  return a.card.compareDocumentPosition(b.card) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
}

function pump() {
  while (inFlight < CONCURRENCY && queue.length) {
    // the viewport's charts first (cards in the 200 px margin wait until those are in), then the
    // chart highest on the page first: the top of the screen fills in first
    queue.sort((a, b) => !!b.inViewport - !!a.inViewport || pageOrder(a, b));
    if (viewportBusy > 0 && !queue[0].inViewport) return; // pumped again once the viewport is drawn
    const first = !firstSent;
    const batch = takeBatch(queue, first);
    if (batch.length === 0) continue;
    firstSent = true;
    inFlight += 1;
    const viewport = !!batch[0].inViewport;
    if (viewport) viewportBusy += 1;
    loadCharts(batch, first).finally(() => {
      if (first) openGate();
      inFlight -= 1;
      if (viewport) {
        whenViewportDrawn(() => {
          viewportBusy -= 1; // the margin's cards may load now
          pump();
        });
      }
      pump();
    });
  }
}

/* One GET /api/series for the histories of `batch` (tag= repeated: a union), at the largest
 * max_points any of them needs. */
async function loadCharts(batch, first) {
  const generations = batch.map((chart) => {
    chart.loadState = "loading";
    return chart.generation;
  });
  const tags = batch.map((chart) => escapeGlob(chart.tag));
  const maxPoints = Math.max(...batch.map(maxPointsFor));
  const early = first ? takeEarly(batch[0], maxPoints) : null;
  let body = first ? embeddedSeries(!!early && early.embedded) : null; // in the page itself: no request
  try {
    if (body) {
      // nothing to wait for
    } else if (early && early.answer) body = await earlySeries(early.answer);
    else body = await fetchSeries({ run: "*", tag: tags.length === 1 ? tags[0] : tags, max_points: maxPoints }, first ? null : firstPaint);
  } catch (err) {
    batch.forEach((chart, i) => {
      noteError(`loading ${chart.tag}: ${err.message}`);
      for (const s of chart.series) s.pending = [];
      if (chart.generation === generations[i]) {
        chart.loadState = "unloaded";
        setTimeout(() => chart.onScreen && requestChart(chart), 2000); // the health probe shows why
      }
    });
    return;
  }
  const byTag = new Map(batch.map((chart) => [chart.tag, []]));
  for (const entry of body.series) {
    const list = byTag.get(entry.tag);
    if (list && typeof entry.run === "string") list.push(entry);
  }
  const seq = num(body.seq);
  batch.forEach((chart, i) => {
    if (chart.generation === generations[i]) applyHistory(chart, seq, byTag.get(chart.tag));
    // else reset meanwhile: a newer load follows
  });
  hooks.scheduleFrame();
}

/* What index.html took care of before the modules loaded (window.lightningStreamBoot.early): the
 * answer it asked for, or word that the server embedded the series (`embedded`, at any max_points);
 * for the page's first request if that is the same chart at no more points; else it is dropped. */
function takeEarly(chart, maxPoints) {
  const boot = window.lightningStreamBoot;
  const early = boot && boot.early;
  if (!early) return null;
  boot.early = null;
  return early.tag === chart.tag && early.maxPoints >= maxPoints ? early : null;
}

/* A chart's loaded history: its series replaced, stream points buffered meanwhile replayed. */
function applyHistory(chart, seq, entries) {
  const answered = new Set();
  for (const entry of entries) {
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

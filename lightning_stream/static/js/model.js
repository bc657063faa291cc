/* What the page holds: the connection state, the view (state.js), and the runs, charts and series
 * maps. Other modules read and change these; DOM for a new run or chart is built through `hooks`
 * (set by main.js), so this module stays free of layout code. */

import { defaultView } from "./state.js";
import { assignColor } from "./colors.js";
import { makeMatcher } from "./glob.js";
import { newSeries } from "./store.js";

export const state = {
  streamState: "connecting", // connecting | live | reconnecting | offline
  restState: "unknown", // unknown | ok | unreachable | error
  restDetail: "",
  lastSeq: null, // seq of the last stream message (id), resume point
  loaded: false, // the runs list is in and the stream may start
  loading: false,
  reloads: 0,
  reconnects: 0,
  draws: 0,
  pointsReceived: 0,
  messagesReceived: 0,
  lastUpdate: null, // Date.now() of the last data point
  server: null, // last /health answer
  dataOrigin: null, // identity of the server the loaded data came from
  errors: [],
  layoutDirty: false,
};

/** The view: filters, smoothing, axes, zoom windows, pins, colours (state.js documents it). */
export const view = defaultView();

export const runs = new Map(); // name -> Run
export const charts = new Map(); // tag -> Chart
export const series = new Map(); // run \0 tag -> Series
export const rateBuckets = []; // [timeMs, points]

/** DOM builders, set by main.js: buildRun(run), buildChart(tag) -> chart, scheduleFrame(). */
export const hooks = { buildRun: null, buildChart: null, scheduleFrame: () => {}, viewChanged: () => {} };

export function noteError(message) {
  state.errors.push(String(message));
  if (state.errors.length > 50) state.errors.shift();
}

let runMatches = () => true;
let tagMatches = () => true;

export function setFilters() {
  runMatches = makeMatcher(view.runFilter);
  tagMatches = makeMatcher(view.tagFilter);
}

export const tagVisible = (tag) => tagMatches(tag);
export const runMatchesFilter = (name) => runMatches(name);
export const runVisible = (run) => run.checked && runMatches(run.name);

/* How many runs hold each colour: a new run's colour avoids those in use (colors.js), and asking a
 * Set of every run's colour per new run made loading 300 runs quadratic. */
const colorUse = new Map();
const colorsInUse = { has: (c) => (colorUse.get(c) || 0) > 0 };

function countColor(color, delta) {
  const n = (colorUse.get(color) || 0) + delta;
  if (n > 0) colorUse.set(color, n);
  else colorUse.delete(color);
}

/** Change a run's colour (a picked one, or null: back to the one its name gets among the others). */
export function setRunColor(run, color) {
  countColor(run.color, -1);
  run.color = color || assignColor(run.name, colorsInUse);
  countColor(run.color, 1);
}

export function getRun(name) {
  let run = runs.get(name);
  if (run) return run;
  const color = view.colors[name] || assignColor(name, colorsInUse);
  countColor(color, 1);
  run = {
    name,
    color,
    logdir: null,
    hparams: null,
    state: null, // started | epoch | finished | failed (from event: status)
    fields: {},
    checked: !view.hidden.includes(name),
    lastStep: null,
    listedStep: null, // last_step in /api/runs (sizes history requests)
    shown: {},
    row: null,
    rowDirty: true,
  };
  runs.set(name, run);
  if (hooks.buildRun) hooks.buildRun(run);
  return run;
}

export function getChart(tag) {
  let chart = charts.get(tag);
  if (chart) return chart;
  chart = hooks.buildChart(tag);
  charts.set(tag, chart);
  return chart;
}

export const seriesKey = (run, tag) => `${run}\u0000${tag}`;

/** The series of (runName, tag), created (with its run and chart) when new. */
export function getSeries(runName, tag) {
  const key = seriesKey(runName, tag);
  let s = series.get(key);
  if (s) return s;
  const run = getRun(runName);
  const chart = getChart(tag);
  s = newSeries(run, tag);
  s.chart = chart;
  s.loadState = "unloaded"; // unloaded | loading | loaded
  s.pending = []; // stream messages received while loading: {seq, steps, walls, values} or {seq, cut}
  series.set(key, s);
  // keep chart.series in run-name order; runs mostly arrive sorted, so this is usually an append
  const list = chart.series;
  let i = list.length;
  while (i > 0 && list[i - 1].run.name > runName) i -= 1;
  list.splice(i, 0, s);
  return s;
}

/** Bookkeeping after a series changed: run's last step, chart dirty, layout when it appears. */
export function touched(s) {
  const run = s.run;
  const last = s.steps[s.n - 1];
  if (s.n > 0 && (run.lastStep === null || last > run.lastStep)) run.lastStep = last;
  run.rowDirty = true;
  const chart = s.chart;
  chart.dirty = true;
  if (chart.card.hidden && runVisible(run) && tagMatches(chart.tag)) state.layoutDirty = true;
}

export function markAllDirty() {
  for (const chart of charts.values()) {
    chart.dirty = true;
    chart.urgent = true;
  }
  hooks.scheduleFrame();
}

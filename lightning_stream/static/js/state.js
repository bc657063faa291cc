/* The view state (everything a user set: filters, smoothing, axes, zoom windows, pins, colours) and
 * its two homes: the page URL (the whole view, so a link reopens it) and localStorage
 * (preferences that outlive a link). Pure: URLSearchParams and plain objects in and out.
 *
 * URL parameters (defaults are left out to keep links short; unknown parameters such as `token`
 * are kept): run, tag (filters) · smoothing · x=step|relative|wall · log=1 (y) · xlog=1 ·
 * outliers=1 · sync=1 (zoom all charts together) · transport=ws · pin=TAG (repeated) ·
 * color=RUN:#rrggbb (repeated) · hide=RUN (repeated, unchecked runs) ·
 * zoom=TAG:x0,x1[,y0,y1] (repeated) · ylim=TAG:lo,hi (repeated, a fixed y range) · chart=TAG:outliers|-log (repeated, per-chart options that
 * override the global switches: a name turns it on for that chart, -name off).
 */

import { isHexColor } from "./colors.js";

export const X_MODES = ["step", "relative", "wall"];
const VIEW_KEYS = ["run", "tag", "smoothing", "x", "log", "xlog", "outliers", "sync", "transport", "pin", "color", "hide", "zoom", "ylim", "chart"];

export function defaultView() {
  return {
    runFilter: "",
    tagFilter: "",
    smoothing: 0.6,
    xMode: "step",
    logScale: false,
    logX: false,
    outliers: false,
    syncZoom: false,
    transport: "sse",
    pins: [],
    colors: {}, // run -> "#rrggbb" chosen by the user
    hidden: [], // runs unchecked in the runs list
    zoom: {}, // tag -> {x: [x0, x1], y: [y0, y1] | null}
    yLimits: {}, // tag -> [lo, hi]: a fixed y range (a zoom box's y wins while zoomed)
    chartOptions: {}, // tag -> {outliers?: bool, log?: bool}: set ones override the global switches
    tooltipSort: "default", // default | descending | ascending | nearest (a preference, not in the URL)
  };
}

const flag = (v) => v === "1" || v === "true";

/** Split "NAME:rest" on the last colon (names may hold colons; the rest never does). */
function splitLast(text) {
  const i = text.lastIndexOf(":");
  return i <= 0 ? null : [text.slice(0, i), text.slice(i + 1)];
}

function parseWindow(text) {
  const nums = text.split(",").map(Number);
  if ((nums.length !== 2 && nums.length !== 4) || !nums.every(Number.isFinite)) return null;
  if (!(nums[0] < nums[1])) return null;
  const y = nums.length === 4 && nums[2] < nums[3] ? [nums[2], nums[3]] : null;
  return { x: [nums[0], nums[1]], y };
}

function formatWindow(win) {
  const parts = [...win.x, ...(win.y || [])];
  return parts.map((v) => String(Number(v.toPrecision(12)))).join(",");
}

/** The view `params` (a URLSearchParams) describes, on top of `base` (defaults or preferences). */
export function parseView(params, base = defaultView()) {
  const view = structuredCloneView(base);
  if (params.has("run")) view.runFilter = params.get("run");
  if (params.has("tag")) view.tagFilter = params.get("tag");
  if (params.has("smoothing")) {
    const s = Number(params.get("smoothing"));
    view.smoothing = Math.min(0.99, Math.max(0, Number.isFinite(s) ? s : 0));
  }
  if (X_MODES.includes(params.get("x"))) view.xMode = params.get("x");
  if (params.has("log")) view.logScale = flag(params.get("log"));
  if (params.has("xlog")) view.logX = flag(params.get("xlog"));
  if (params.has("outliers")) view.outliers = flag(params.get("outliers"));
  if (params.has("sync")) view.syncZoom = flag(params.get("sync"));
  const tr = params.get("transport");
  if (tr === "ws" || tr === "sse") view.transport = tr;
  if (params.has("pin")) view.pins = params.getAll("pin").filter(Boolean);
  if (params.has("hide")) view.hidden = params.getAll("hide").filter(Boolean);
  for (const c of params.getAll("color")) {
    const kv = splitLast(c);
    if (kv && isHexColor(kv[1])) view.colors[kv[0]] = kv[1].toLowerCase();
  }
  if (params.has("zoom")) view.zoom = {};
  for (const z of params.getAll("zoom")) {
    const kv = splitLast(z);
    const win = kv && parseWindow(kv[1]);
    if (win) view.zoom[kv[0]] = win;
  }
  for (const t of params.getAll("ylim")) {
    const kv = splitLast(t);
    const nums = kv ? kv[1].split(",").map(Number) : [];
    if (nums.length === 2 && nums.every(Number.isFinite) && nums[0] < nums[1]) view.yLimits[kv[0]] = nums;
  }
  for (const c of params.getAll("chart")) {
    const kv = splitLast(c);
    if (!kv) continue;
    const opts = kv[1].split("|");
    const o = {};
    for (const name of ["outliers", "log"]) {
      if (opts.includes(name)) o[name] = true;
      else if (opts.includes(`-${name}`)) o[name] = false;
    }
    if (Object.keys(o).length) view.chartOptions[kv[0]] = o;
  }
  return view;
}

/** `params` with the view's parameters replaced by those of `view` (defaults left out). */
export function viewToParams(view, params = new URLSearchParams()) {
  const out = new URLSearchParams();
  for (const [k, v] of params) if (!VIEW_KEYS.includes(k)) out.append(k, v);
  const d = defaultView();
  if (view.runFilter) out.set("run", view.runFilter);
  if (view.tagFilter) out.set("tag", view.tagFilter);
  if (view.smoothing !== d.smoothing) out.set("smoothing", String(view.smoothing));
  if (view.xMode !== d.xMode) out.set("x", view.xMode);
  if (view.logScale) out.set("log", "1");
  if (view.logX) out.set("xlog", "1");
  if (view.outliers) out.set("outliers", "1");
  if (view.syncZoom) out.set("sync", "1");
  if (view.transport !== d.transport) out.set("transport", view.transport);
  for (const p of view.pins) out.append("pin", p);
  for (const h of view.hidden) out.append("hide", h);
  for (const [run, c] of Object.entries(view.colors)) out.append("color", `${run}:${c}`);
  for (const [tag, win] of Object.entries(view.zoom)) out.append("zoom", `${tag}:${formatWindow(win)}`);
  for (const [tag, [lo, hi]] of Object.entries(view.yLimits)) out.append("ylim", `${tag}:${lo},${hi}`);
  for (const [tag, o] of Object.entries(view.chartOptions)) {
    const opts = ["outliers", "log"].filter((k) => typeof o[k] === "boolean").map((k) => (o[k] ? k : `-${k}`));
    if (opts.length) out.append("chart", `${tag}:${opts.join("|")}`);
  }
  return out;
}

/** What localStorage keeps: preferences, not the filters or zoom windows of one look. */
export function prefsOf(view, theme) {
  return {
    smoothing: view.smoothing,
    logScale: view.logScale,
    logX: view.logX,
    xMode: view.xMode,
    outliers: view.outliers,
    syncZoom: view.syncZoom,
    transport: view.transport,
    colors: view.colors,
    pins: view.pins,
    tooltipSort: view.tooltipSort,
    theme: theme || null,
  };
}

/** Defaults overlaid with saved preferences (anything malformed is ignored). */
export function viewFromPrefs(saved) {
  const view = defaultView();
  if (!saved || typeof saved !== "object") return view;
  if (typeof saved.smoothing === "number" && saved.smoothing >= 0 && saved.smoothing <= 0.99) view.smoothing = saved.smoothing;
  for (const k of ["logScale", "logX", "outliers", "syncZoom"]) if (typeof saved[k] === "boolean") view[k] = saved[k];
  if (X_MODES.includes(saved.xMode)) view.xMode = saved.xMode;
  if (saved.transport === "ws" || saved.transport === "sse") view.transport = saved.transport;
  if (["default", "descending", "ascending", "nearest"].includes(saved.tooltipSort)) view.tooltipSort = saved.tooltipSort;
  if (Array.isArray(saved.pins)) view.pins = saved.pins.filter((p) => typeof p === "string");
  if (saved.colors && typeof saved.colors === "object") {
    for (const [run, c] of Object.entries(saved.colors)) if (isHexColor(c)) view.colors[run] = c;
  }
  return view;
}

function structuredCloneView(v) {
  return {
    ...v,
    pins: [...v.pins],
    hidden: [...v.hidden],
    colors: { ...v.colors },
    zoom: { ...v.zoom },
    yLimits: { ...v.yLimits },
    chartOptions: { ...v.chartOptions },
  };
}

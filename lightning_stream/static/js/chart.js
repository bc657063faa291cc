/* One chart card: its DOM (built once) and its draw pass. A draw computes the x window (the zoom,
 * else the data), the y range (fixed by a zoom box, robust when ignoring outliers, else the data),
 * then strokes every visible run decimated per pixel column (decimate.js). A zoomed chart draws the
 * exact window points the loader fetched, plus any held points streamed in after them. */

import { blocksFor, strokeDecimated } from "./decimate.js";
import { drawAxes } from "./axes.js";
import { formatCount, formatLogTick, formatTick } from "./format.js";
import { runVisible, state, view } from "./model.js";
import { linearTicks, logTicks, padRange, valueRange } from "./scale.js";
import { smoothArray, smoothed } from "./smooth.js";
import { lowerBound, refreshRange } from "./store.js";

let theme = null;

export function readTheme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  theme = { fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), axis: v("--axis"), card: v("--card"), bad: v("--bad") };
}

/** The card of `tag`: header (title, meta, tools), plot canvas and hover overlay. */
export function buildChart(tag) {
  const card = document.createElement("article");
  card.className = "chart";
  card.dataset.tag = tag;
  const head = document.createElement("header");
  const h = document.createElement("h3");
  h.textContent = tag;
  h.title = tag;
  const meta = document.createElement("span");
  meta.className = "meta";
  const tools = document.createElement("span");
  tools.className = "tools";
  head.append(h, meta, tools);
  const plot = document.createElement("div");
  plot.className = "plot";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `line chart of ${tag}: value by step, one line per run`);
  const overlay = document.createElement("canvas");
  overlay.className = "overlay";
  overlay.setAttribute("aria-hidden", "true");
  plot.append(canvas, overlay);
  card.append(head, plot);
  card.hidden = true; // shown once a visible run has this tag
  const chart = {
    tag,
    card,
    meta,
    tools,
    plot,
    canvas,
    overlay,
    ctx: canvas.getContext("2d"),
    octx: overlay.getContext("2d"),
    series: [],
    width: 0,
    height: 0,
    dpr: 1,
    dirty: true,
    onScreen: false,
    urgent: false, // the view changed: redraw at the next frame, whatever the data rate
    drawnAt: -Infinity,
    layout: null, // scales and drawn parts of the last draw, for hover and zoom
    hover: null, // {x, y} CSS px inside the plot
    drag: null, // zoom box being dragged
    shown: {},
    draws: 0,
    drawnPoints: 0,
    skips: 0, // data-driven redraws left out: nothing drawn had changed (drawKey)
    drawKey: null,
    clipped: false,
    loadState: "unloaded", // unloaded | loading | loaded (loader.js)
    loadedAt: Infinity,
    generation: 0,
    loads: 0,
    queued: false,
    window: null, // exact points of the zoom window (loader.js)
    windowLoads: 0,
    windowKeyInFlight: null,
    order: () => card.offsetTop,
    zoom: () => view.zoom[tag] || null,
    zoomSteps: () => zoomSteps(chart),
  };
  return chart;
}

export function resizeChart(chart, width, height) {
  const dpr = window.devicePixelRatio || 1;
  if (chart.width === width && chart.height === height && chart.dpr === dpr) return false;
  chart.width = width;
  chart.height = height;
  chart.dpr = dpr;
  for (const c of [chart.canvas, chart.overlay]) {
    c.width = Math.max(1, Math.round(width * dpr));
    c.height = Math.max(1, Math.round(height * dpr));
  }
  chart.dirty = true;
  chart.urgent = true; // resizing cleared the canvas
  return true;
}

/** A per-chart switch, when set, overrides the global one. */
export function chartOption(tag, name) {
  const o = view.chartOptions[tag];
  if (o && typeof o[name] === "boolean") return o[name];
  return name === "log" ? view.logScale : view.outliers;
}

/* The x value of point i of (steps, walls) in the current x mode, before the log transform. */
function xOf(mode, steps, walls, i, xoff) {
  return mode === "step" ? steps[i] : walls[i] - xoff;
}

/** The step window a zoom covers (the server windows by step): direct in step mode, else the steps
 * of the held points whose time falls inside the zoom. */
export function zoomSteps(chart) {
  const z = chart.zoom();
  if (!z) return null;
  const [a, b] = z.x;
  if (view.xMode === "step") return [Math.floor(a), Math.ceil(b)];
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of chart.series) {
    if (s.n === 0 || !runVisible(s.run)) continue;
    const xoff = view.xMode === "relative" ? s.walls[0] : 0;
    for (let i = 0; i < s.n; i++) {
      const x = s.walls[i] - xoff;
      if (x >= a && x <= b) {
        if (s.steps[i] < lo) lo = s.steps[i];
        if (s.steps[i] > hi) hi = s.steps[i];
      }
    }
  }
  return Number.isFinite(lo) ? [lo, hi] : null;
}

/* The parts of series `s` to draw: the zoom window's exact points (if loaded) and held points after
 * them, else everything held. Each part: {steps, walls, values, smooth, n, blocks}. */
function partsOf(chart, s, w) {
  const parts = [];
  const win = chart.window && chart.window.data.get(s.run.name);
  let heldFrom = 0;
  if (win && win.steps.length) {
    const n = win.steps.length;
    const before = lowerBound(s.steps, s.n, win.steps[0]) - 1;
    const seed = w > 0 && before >= 0 ? smoothed(s, w)[before] : NaN;
    parts.push({ steps: win.steps, walls: win.walls, values: win.values, smooth: w > 0 ? smoothArray(win.values, w, seed) : null, n, raw: null, sblk: null });
    heldFrom = lowerBound(s.steps, s.n, win.steps[n - 1] + 1);
    if (heldFrom >= s.n) return parts;
  }
  const sm = w > 0 ? smoothed(s, w) : null;
  // The block summaries pay off where a pixel column holds many points; a series with fewer points
  // than the plot has device-pixel columns is stroked point by point (the same polyline), without
  // summarising it first (the first paint of 300 runs: 2 x 300 summaries that no draw would use).
  const dense = s.n > chart.width * chart.dpr;
  parts.push({
    steps: s.steps,
    walls: s.walls,
    values: s.values,
    smooth: sm,
    n: s.n,
    from: heldFrom,
    raw: dense ? blocksFor(s.rawBlocks, s.values, s.n) : null,
    sblk: dense && sm ? blocksFor(s.smoothBlocks, sm, s.n) : null,
  });
  return parts;
}

/* Index range [from, to) of a part whose x lies in [x0, x1] (x ascending in every mode: steps, and
 * wall times of one run, which only go forward). */
function span(part, mode, xoff, x0, x1) {
  const key = mode === "step" ? part.steps : part.walls;
  const off = mode === "step" ? 0 : xoff;
  const from = Math.max(part.from || 0, lowerBound(key, part.n, x0 + off) - 1);
  const to = Math.min(part.n, lowerBound(key, part.n, x1 + off) + 1);
  return [Math.max(0, from), to];
}

/** Draw the chart; false when nothing was drawn (too small, or nothing changed since the last draw). */
export function drawChart(chart) {
  const { ctx, width: W, height: H, dpr } = chart;
  if (W < 10 || H < 10) return false;
  const log = chartOption(chart.tag, "log");
  const robust = chartOption(chart.tag, "outliers");
  const logX = view.logX && view.xMode !== "wall";
  const mode = view.xMode;
  const w = view.smoothing;
  const zoom = chart.zoom();
  const drawn = [];
  let xmin = Infinity;
  let xmax = -Infinity;
  for (const s of chart.series) {
    if (s.n === 0 && !(chart.window && chart.window.data.has(s.run.name))) continue;
    if (!runVisible(s.run)) continue;
    const xoff = mode === "relative" ? s.walls[0] : 0;
    const parts = partsOf(chart, s, w);
    for (const p of parts) {
      const first = p.from || 0;
      if (p.n <= first) continue;
      const a = xOf(mode, p.steps, p.walls, first, xoff);
      const b = xOf(mode, p.steps, p.walls, p.n - 1, xoff);
      if (a < xmin) xmin = a;
      if (b > xmax) xmax = b;
    }
    drawn.push({ s, xoff, parts });
  }
  if (zoom) [xmin, xmax] = zoom.x;
  if (logX) {
    xmin = Math.log10(Math.max(xmin, zoom ? 1e-12 : 1));
    xmax = Math.log10(Math.max(xmax, 1));
  }
  if (!readyTheme() || !Number.isFinite(xmin) || drawn.length === 0) {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    chart.layout = null;
    chart.drawKey = null;
    ctx.fillStyle = theme.muted;
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(chart.loadState === "loaded" ? "no data" : "loading…", W / 2, H / 2);
    return true;
  }
  if (xmin === xmax) {
    xmin -= 1;
    xmax += 1;
  }
  // y range: what is visible inside the x window
  const ranges = [];
  let points = 0;
  const rx0 = logX ? Math.pow(10, xmin) : xmin;
  const rx1 = logX ? Math.pow(10, xmax) : xmax;
  const fastPath = !zoom && !robust;
  for (const d of drawn) {
    for (const p of d.parts) {
      const [from, to] = fastPath ? [p.from || 0, p.n] : span(p, mode, d.xoff, rx0, rx1);
      points += to - from;
      p.range = [from, to];
      if (!fastPath) {
        ranges.push({ ys: p.values, from, to });
        if (p.smooth) ranges.push({ ys: p.smooth, from, to });
      }
    }
  }
  // Points streamed in past a zoom window change nothing drawn: keep the picture (and the CPU).
  const key = drawKey(chart, drawn, [W, H, dpr, theme, mode, log, robust, logX, w, xmin, xmax, ...(zoom && zoom.y ? zoom.y : [null, null]), ...(view.yLimits[chart.tag] || [null, null])]);
  if (chart.layout && sameKey(chart.drawKey, key)) {
    chart.skips += 1;
    return false;
  }
  chart.drawKey = key;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  chart.layout = null;
  let r;
  if (fastPath) {
    r = { lo: Infinity, hi: -Infinity, clipped: false };
    for (const d of drawn) {
      refreshRange(d.s);
      const lo = log ? d.s.minPos : d.s.min;
      if (lo < r.lo) r.lo = lo;
      if (d.s.max > r.hi) r.hi = d.s.max;
    }
  } else r = valueRange(ranges, { log, robust });
  let ymin = r.lo;
  let ymax = r.hi;
  let noPositive = false;
  const fixedY = zoom && zoom.y ? zoom.y : view.yLimits[chart.tag] || null;
  if (fixedY) [ymin, ymax] = fixedY;
  if (log) {
    if (!(ymax > 0) || !Number.isFinite(ymin)) {
      noPositive = !fixedY;
      ymin = noPositive ? 1 : ymin;
      ymax = noPositive ? 10 : ymax;
    }
    ymin = Math.log10(Math.max(ymin, 1e-300));
    ymax = Math.log10(ymax);
  } else if (!Number.isFinite(ymin)) {
    ymin = 0;
    ymax = 1;
  }
  if (!fixedY) [ymin, ymax] = padRange(ymin, ymax, log);
  chart.clipped = r.clipped && !fixedY;

  ctx.font = "11px system-ui, sans-serif";
  const rows = Math.max(2, Math.round(H / 45));
  let yTicks;
  let yLabels;
  if (log) {
    yTicks = logTicks(ymin, ymax, rows).map((v) => Math.log10(v));
    yLabels = yTicks.map((lv) => formatLogTick(Math.pow(10, lv)));
  } else {
    const t = linearTicks(ymin, ymax, rows);
    yTicks = t.ticks;
    yLabels = yTicks.map((v) => formatTick(v, t.step));
  }
  let labelW = 0;
  for (const s of yLabels) labelW = Math.max(labelW, ctx.measureText(s).width);
  const left = Math.ceil(20 + labelW + 6);
  const right = 12;
  const top = 8;
  const bottom = 34;
  const pw = W - left - right;
  const ph = H - top - bottom;
  if (pw < 10 || ph < 10) return true;
  const L = { x0: xmin, x1: xmax, sx: pw / (xmax - xmin), y0: ymax, y1: ymin, sy: ph / (ymax - ymin), log, xlog: logX, left, top, pw, ph, dpr, mode };
  drawAxes(ctx, L, yTicks, yLabels, theme);

  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, pw, ph);
  ctx.clip();
  ctx.lineJoin = "round";
  for (const d of drawn) {
    const color = d.s.run.color;
    ctx.strokeStyle = color;
    const PL = { ...L, xoff: d.xoff };
    for (const p of d.parts) {
      const xs = mode === "step" ? p.steps : p.walls;
      const [from, to] = p.range;
      ctx.beginPath();
      if (p.smooth) {
        ctx.globalAlpha = 0.25;
        ctx.lineWidth = 1;
        strokeDecimated(ctx, xs, p.values, p.n, PL, p.raw, from, to);
        ctx.stroke();
        ctx.beginPath();
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.75;
        strokeDecimated(ctx, xs, p.smooth, p.n, PL, p.sblk, from, to);
      } else {
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.5;
        strokeDecimated(ctx, xs, p.values, p.n, PL, p.raw, from, to);
      }
      ctx.stroke();
      if (to - from === 1) dot(ctx, L, xs[from] - d.xoff, p.values[from], color);
    }
  }
  ctx.restore();
  ctx.fillStyle = theme.muted;
  ctx.textAlign = "center";
  if (noPositive) ctx.fillText("no positive values for a log scale", left + pw / 2, top + ph / 2);
  if (chart.clipped) {
    ctx.fillStyle = theme.bad;
    ctx.textAlign = "right";
    ctx.textBaseline = "top";
    ctx.fillText("⇕ outliers clipped", left + pw - 4, top + 2);
  }
  chart.layout = { ...L, drawn };
  chart.drawnPoints = points;
  chart.draws += 1;
  state.draws += 1;
  const runsShown = drawn.length;
  const metaText = `${runsShown} run${runsShown === 1 ? "" : "s"} · ${formatCount(points)} pts${zoom ? " · zoomed" : ""}`;
  if (chart.shown.meta !== metaText) {
    chart.shown.meta = metaText;
    chart.meta.textContent = metaText;
  }
  return true;
}

/**
 * What a draw of `chart` depends on beyond `view` (the caller's `params`): per drawn series its
 * identity, colour, x offset, the index range of each part and `cuts` (store.js: anything but an
 * append), and the zoom window's data. Two equal keys draw the same picture: held arrays only grow,
 * and an append past the drawn range leaves every drawn index (and its smoothed value) as it was.
 */
export function drawKey(chart, drawn, params) {
  const key = params.slice();
  key.push(chart.window, chart.loadState, drawn.length);
  for (const d of drawn) {
    key.push(d.s, d.s.cuts, d.s.run.color, d.xoff, d.parts.length);
    for (const p of d.parts) key.push(p.range[0], p.range[1]);
  }
  return key;
}

/** Element-wise equality of two draw keys (null never equals). */
export function sameKey(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(a[i] !== a[i] && b[i] !== b[i])) return false;
  return true;
}

function readyTheme() {
  if (!theme) readTheme();
  return true;
}

function dot(ctx, L, x, v, color) {
  const xv = L.xlog ? Math.log10(x) : x;
  const yv = L.log ? Math.log10(v) : v;
  if (!Number.isFinite(xv) || !Number.isFinite(yv)) return;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.arc(L.left + (xv - L.x0) * L.sx, L.top + (L.y0 - yv) * L.sy, 2.5, 0, Math.PI * 2);
  ctx.fill();
}

/* The same series drawn by the dashboard's canvas chart (static/js/chart.js) and by uPlot, on a
 * 600 x 230 canvas, one line per run: the time of one full redraw (JS work of the draw call;
 * uPlot commits in a microtask, timed to its `draw` hook). Run by bench_dashboard.py --chart-libs. */

import { buildChart, drawChart, resizeChart } from "/static/js/chart.js";
import { getSeries, hooks, view } from "/static/js/model.js";
import { appendColumns } from "/static/js/store.js";

hooks.buildChart = buildChart;
view.smoothing = 0; // one line per run in both

function columns(runs, n) {
  const xs = Float64Array.from({ length: n }, (_, i) => i);
  const ys = [];
  for (let r = 0; r < runs; r++) {
    ys.push(Float64Array.from(xs, (i) => (1 / (1 + 0.01 * i)) * (1 + 0.02 * r) + 0.05 * ((i * 7919 + r) % 13)));
  }
  return { xs, ys };
}

const quantile = (v, q) => v.slice().sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(q * v.length))];
const summary = (v) => ({ p50: quantile(v, 0.5), p95: quantile(v, 0.95), n: v.length });

function ours(name, d, reps) {
  const tag = `bench/${name}`;
  let chart = null;
  d.ys.forEach((ys, r) => {
    const s = getSeries(`run${r}`, tag);
    appendColumns(s, d.xs, d.xs, ys);
    chart = s.chart;
  });
  chart.loadState = "loaded";
  chart.card.hidden = false;
  document.getElementById("charts").append(chart.card);
  resizeChart(chart, 600, 230);
  const t0 = performance.now();
  drawChart(chart); // first draw: summaries (min/max blocks) are built here
  const first = performance.now() - t0;
  const times = [];
  for (let k = 0; k < reps; k++) {
    const t = performance.now();
    drawChart(chart);
    times.push(performance.now() - t);
  }
  chart.card.remove();
  return { first, redraw: summary(times) };
}

async function uplot(d, reps) {
  const host = document.getElementById("uplot");
  let drawnAt = 0;
  const opts = {
    width: 600,
    height: 230,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false } },
    series: [{}, ...d.ys.map((_, r) => ({ stroke: `hsl(${(r * 37) % 360}, 70%, 55%)`, width: 1.5 }))],
    hooks: { draw: [() => (drawnAt = performance.now())] },
  };
  const data = [d.xs, ...d.ys];
  const t0 = performance.now();
  const u = new uPlot(opts, data, host); // eslint-disable-line no-undef
  await new Promise((r) => setTimeout(r, 0));
  const first = drawnAt - t0;
  const times = [];
  for (let k = 0; k < reps; k++) {
    const t = performance.now();
    u.setData(data);
    await Promise.resolve();
    await Promise.resolve();
    if (drawnAt < t) await new Promise((r) => setTimeout(r, 0));
    times.push(drawnAt - t);
  }
  u.destroy();
  return { first, redraw: summary(times) };
}

export async function run(reps = 30) {
  const cases = {
    "300 runs x 200 points (a card of the 300-run case)": [300, 200],
    "1 run x 1,200 points (a 100k-step card as held: max_points)": [1, 1200],
    "1 run x 100,000 points (undecimated)": [1, 100000],
    "10 runs x 2,000 points (streaming)": [10, 2000],
  };
  const out = {};
  for (const [name, [runs, n]] of Object.entries(cases)) {
    const d = columns(runs, n);
    ours(`warm${runs}x${n}`, d, 3);
    await uplot(d, 3);
    out[name] = { ours: ours(`${runs}x${n}`, d, reps), uplot: await uplot(d, reps) };
  }
  return out;
}

window.chartBench = { run };

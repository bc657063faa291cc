// chart.js's draw pass against a recording 2D context: what a streaming chart redraws, and that a
// redraw it leaves out would have drawn the same picture. `node --test tests/js`.
import { test } from "node:test";
import assert from "node:assert/strict";

// chart.js reads the theme from CSS once; these are all the DOM it touches outside buildChart
globalThis.document = { documentElement: {} };
globalThis.getComputedStyle = () => ({ getPropertyValue: () => "#123456" });

const js = (name) => import(new URL(`../../lightning_stream/static/js/${name}`, import.meta.url));
const { drawChart } = await js("chart.js");
const { view } = await js("model.js");
const store = await js("store.js");

/** A 2D context that records every call and property write, in order. */
function recorder() {
  const ops = [];
  return new Proxy(
    { ops },
    {
      get(target, name) {
        if (name === "ops") return ops;
        if (name === "measureText") return (text) => ({ width: text.length * 6 });
        return (...args) => ops.push([name, ...args]);
      },
      set(target, name, value) {
        ops.push([`=${String(name)}`, value]);
        return true;
      },
    },
  );
}

function makeChart(tag, runs, steps) {
  const chart = {
    tag,
    ctx: recorder(),
    meta: { textContent: "" },
    series: [],
    width: 600,
    height: 230,
    dpr: 1,
    window: null,
    layout: null,
    drawKey: null,
    shown: {},
    draws: 0,
    skips: 0,
    loadState: "loaded",
    zoom: () => view.zoom[tag] || null,
  };
  for (let r = 0; r < runs; r++) {
    const s = store.newSeries({ name: `run${r}`, color: `#00000${r}`, checked: true }, tag);
    for (let i = 0; i < steps; i++) store.appendPoint(s, i, 1000 + i, Math.sin(i / 10) + r);
    chart.series.push(s);
  }
  return chart;
}

const append = (chart, from, to) => {
  for (const s of chart.series) for (let i = from; i < to; i++) store.appendPoint(s, i, 1000 + i, Math.cos(i) * 5);
};

/** The calls of the next draw (the recorder cleared first). */
function draw(chart) {
  chart.ctx.ops.length = 0;
  const drew = drawChart(chart);
  return { drew, ops: chart.ctx.ops.map((op) => JSON.stringify(op)) };
}

test("a zoomed chart keeps its picture while points stream in past its window, and it is the same picture", () => {
  view.smoothing = 0.6;
  const chart = makeChart("zoomed", 3, 500);
  view.zoom.zoomed = { x: [100, 200], y: null };
  const first = draw(chart);
  assert.equal(first.drew, true);
  append(chart, 500, 700); // far past the window: the line already leaves it at step 201
  assert.equal(draw(chart).drew, false);
  assert.equal(chart.skips, 1);
  chart.drawKey = null; // force the redraw it left out: the calls are the very same
  assert.deepEqual(draw(chart).ops, first.ops);
  delete view.zoom.zoomed;
});

test("a redraw is not left out when what it shows changed", () => {
  view.smoothing = 0.6;
  const chart = makeChart("changes", 2, 300);
  view.zoom.changes = { x: [100, 400], y: null };
  draw(chart);
  append(chart, 300, 310); // inside the window
  assert.equal(draw(chart).drew, true);
  store.appendPoint(chart.series[0], 150, 0, 7); // a purge inside the window
  assert.equal(draw(chart).drew, true);
  assert.equal(draw(chart).drew, false); // nothing new
  chart.series[1].run.color = "#ff0000";
  assert.equal(draw(chart).drew, true);
  view.smoothing = 0.9;
  assert.equal(draw(chart).drew, true);
  view.zoom.changes = { x: [100, 401], y: null };
  assert.equal(draw(chart).drew, true);
  delete view.zoom.changes;
  // unzoomed, the chart follows the data: every new point is a redraw
  assert.equal(draw(chart).drew, true);
  append(chart, 500, 501);
  assert.equal(draw(chart).drew, true);
  view.smoothing = 0.6;
});

test("a series sparser than the plot's pixel columns is drawn without block summaries, a dense one with", () => {
  view.smoothing = 0.6;
  const sparse = makeChart("sparse", 3, 200); // 200 points on a 600 px chart
  assert.equal(draw(sparse).drew, true);
  for (const s of sparse.series) assert.deepEqual([s.rawBlocks.done, s.smoothBlocks.done], [0, 0]);
  const dense = makeChart("dense", 2, 5000);
  assert.equal(draw(dense).drew, true);
  for (const s of dense.series) assert.deepEqual([s.rawBlocks.done, s.smoothBlocks.done], [5000 >> 4, 5000 >> 4]);
});

// Unit tests of the dashboard's pure modules: `node --test tests/js` (Node 20, no npm packages).
import { test } from "node:test";
import assert from "node:assert/strict";

const js = (name) => import(new URL(`../../lightning_stream/static/js/${name}`, import.meta.url));
const { globToRegExp, makeMatcher, escapeGlob } = await js("glob.js");
const store = await js("store.js");
const { smoothed, smoothArray } = await js("smooth.js");
const { strokeDecimated, blocksFor, newBlocks } = await js("decimate.js");
const scale = await js("scale.js");
const { assignColor, colorForRun, hashName, isHexColor, PALETTE } = await js("colors.js");
const { parseJSON } = await js("api.js");

test("globs match whole names, case-insensitively, with classes and negated classes", () => {
  assert.ok(globToRegExp("train/*").test("train/loss"));
  assert.ok(!globToRegExp("train/*").test("val/train/loss"));
  assert.ok(globToRegExp("v?l").test("VAL"));
  assert.ok(globToRegExp("run[12]").test("run2"));
  assert.ok(!globToRegExp("run[!12]").test("run2"));
  assert.ok(globToRegExp("a.b+c").test("a.b+c"));
  assert.ok(!globToRegExp("a.b").test("axb"));
});

test("the filter language: plain words anywhere, globs whole, ! excludes, empty matches all", () => {
  const m = makeMatcher("loss !val*");
  assert.ok(m("train/loss"));
  assert.ok(!m("val/loss"));
  assert.ok(!m("train/acc"));
  assert.ok(makeMatcher("")("anything"));
  assert.ok(makeMatcher("wide*, base*")("baseline"));
});

test("escapeGlob makes a name an fnmatch glob of itself", () => {
  assert.equal(escapeGlob("a*b?[c]"), "a[*]b[?][[]c]");
  assert.ok(globToRegExp(escapeGlob("x[1]*")).test("x[1]*"));
});

test("the store's purge rule: a step at or below the last drops held points with step >= it", () => {
  const s = store.newSeries("run", "loss");
  for (const step of [0, 1, 2, 3, 4]) store.appendPoint(s, step, 100 + step, step * 10);
  store.appendPoint(s, 2, 200, -1); // resumed from a checkpoint at step 2
  assert.deepEqual(Array.from(s.steps.subarray(0, s.n)), [0, 1, 2]);
  assert.deepEqual(Array.from(s.values.subarray(0, s.n)), [0, 10, -1]);
  store.refreshRange(s);
  assert.equal(s.min, -1);
  assert.equal(s.max, 10);
  store.appendPoint(s, 2, 201, 5); // re-sent point: idempotent
  assert.equal(s.n, 3);
});

test("the store grows by doubling and replaces its contents from columns", () => {
  const s = store.newSeries("run", "loss");
  const steps = Array.from({ length: 1000 }, (_, i) => i);
  store.appendColumns(s, steps, steps, steps.map((i) => i * 2));
  assert.equal(s.n, 1000);
  assert.ok(s.steps.length >= 1000);
  store.replaceColumns(s, [5, 6], [1, 2], ["NaN", "Infinity"]);
  assert.equal(s.n, 2);
  assert.ok(Number.isNaN(s.values[0]));
  assert.equal(s.values[1], Infinity);
  assert.equal(store.lowerBound(s.steps, s.n, 6), 1);
});

function tensorboardEma(values, w) {
  let last = 0;
  return values.map((v, i) => {
    last = last * w + (1 - w) * v;
    return last / (1 - Math.pow(w, i + 1));
  });
}

test("a loaded history is held in arrays sized once from the answer, its value range exact", () => {
  const s = store.newSeries("run", "loss");
  const steps = Array.from({ length: 200 }, (_, i) => i);
  store.replaceColumns(s, steps, steps, steps.map((i) => (i === 7 ? "NaN" : i === 8 ? "Infinity" : i - 50)));
  assert.equal(s.n, 200);
  assert.deepEqual([s.steps.length, s.walls.length, s.values.length], [200, 200, 200]); // not grown to 256
  assert.equal(s.rangeStale, false); // no rescan at the first draw
  assert.deepEqual([s.min, s.max, s.minPos], [-50, 149, 1]); // NaN and Infinity are not in it, as appendPoint
  assert.ok(Number.isNaN(s.values[7]) && s.values[8] === Infinity);
  store.replaceColumns(s, [3, 4], [0, 0], [1, 2]); // a smaller answer reuses the arrays
  assert.equal(s.steps.length, 200);
  assert.deepEqual(Array.from(s.steps.subarray(0, s.n)), [3, 4]);
  store.replaceColumns(s, [0, 1, 2, 1], [0, 0, 0, 0], [5, 6, 7, 8]); // not ascending: the purge rule
  assert.deepEqual(Array.from(s.steps.subarray(0, s.n)), [0, 1]);
  assert.deepEqual(Array.from(s.values.subarray(0, s.n)), [5, 8]);
});

test("smoothing is TensorBoard's debiased EMA, incremental and equal to a full recompute", () => {
  const values = Array.from({ length: 40 }, (_, i) => Math.sin(i / 3) + 0.1 * i);
  const s = store.newSeries("r", "t");
  store.appendColumns(s, values.map((_, i) => i), values.map(() => 0), values.slice(0, 20));
  smoothed(s, 0.9);
  store.appendColumns(s, values.map((_, i) => i).slice(20), values.map(() => 0).slice(20), values.slice(20));
  const got = Array.from(smoothed(s, 0.9).subarray(0, s.n));
  tensorboardEma(values, 0.9).forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-5, `index ${i}`));
  const arr = smoothArray(values, 0.9);
  tensorboardEma(values, 0.9).forEach((v, i) => assert.ok(Math.abs(arr[i] - v) < 1e-9));
  // seeded: continues from the value before a window, without the start-up debias
  assert.equal(smoothArray([10], 0.5, 2)[0], 6);
});

class Recorder {
  constructor() {
    this.moves = 0;
    this.points = [];
  }
  moveTo(x, y) {
    this.moves += 1;
    this.points.push([x, y]);
  }
  lineTo(x, y) {
    this.points.push([x, y]);
  }
}

test("decimation keeps at most 4 vertices per pixel column and every spike", () => {
  const n = 100000;
  const xs = new Float64Array(n);
  const ys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    xs[i] = i;
    ys[i] = i === 61803 ? 100 : 0;
  }
  const L = { x0: 0, sx: 500 / n, y0: 100, sy: 1, log: false, left: 0, top: 0, dpr: 1 };
  const path = new Recorder();
  const vertices = strokeDecimated(path, xs, ys, n, L, blocksFor(newBlocks(), ys, n));
  assert.ok(vertices <= 4 * 501, `${vertices} vertices`);
  assert.ok(path.points.some(([x, y]) => y === 0 && Math.abs(x - 309) <= 1), "the spike reached the top");
  assert.equal(path.moves, 1);
});

test("decimation: the block summaries change nothing drawn, only the work (so sparse series skip them)", () => {
  for (const [n, width] of [[5000, 500], [300, 500], [2000, 37]]) {
    const xs = Float64Array.from({ length: n }, (_, i) => i * i * 0.001); // uneven: dense left, sparse right
    const ys = Float64Array.from({ length: n }, (_, i) => Math.sin(i / 7) * (i % 13) + (i === 40 ? 50 : 0));
    const L = { x0: 0, sx: width / xs[n - 1], y0: 60, sy: 2, log: false, left: 3, top: 4, dpr: 1 };
    const withBlocks = new Recorder();
    const plain = new Recorder();
    strokeDecimated(withBlocks, xs, ys, n, L, blocksFor(newBlocks(), ys, n));
    strokeDecimated(plain, xs, ys, n, L, null);
    assert.deepEqual(withBlocks.points, plain.points, `n=${n} width=${width}`);
  }
});

test("decimation: a pixel column with one value is one vertex, and a lone point is still a path", () => {
  const n = 200;
  const xs = Float64Array.from({ length: n }, (_, i) => i);
  const ys = Float64Array.from({ length: n }, (_, i) => i % 5);
  const L = { x0: 0, sx: 2, y0: 10, sy: 1, log: false, left: 0, top: 0, dpr: 1 }; // 2 px per point
  const path = new Recorder();
  // the first point: moveTo and lineTo (a path of its own, as before); then one lineTo per point, not two
  assert.equal(strokeDecimated(path, xs, ys, n, L, null), n + 1);
  assert.equal(path.moves, 1);
  assert.equal(path.points.length, n + 1);
  const lone = new Recorder();
  strokeDecimated(lone, Float64Array.from([1, 2, 3]), Float64Array.from([NaN, 4, NaN]), 3, L, null);
  assert.deepEqual(lone.points, [[4, 6], [4, 6]]); // moveTo and lineTo, as before
});

test("decimation leaves a gap at non-finite values and honours from/to and the x offset", () => {
  const xs = Float64Array.from([10, 11, 12, 13]);
  const ys = Float64Array.from([1, NaN, 2, 3]);
  const L = { x0: 0, sx: 10, y0: 0, sy: 1, log: false, left: 0, top: 0, dpr: 1, xoff: 10 };
  const path = new Recorder();
  strokeDecimated(path, xs, ys, 4, L, null);
  assert.equal(path.moves, 2);
  assert.deepEqual(path.points[0], [0, -1]);
  const part = new Recorder();
  strokeDecimated(part, xs, ys, 4, L, null, 2, 3);
  assert.deepEqual(part.points, [[20, -2], [20, -2]]);
});

test("ticks are round numbers inside the range; log ticks are 1-2-5 decades", () => {
  const { ticks, step } = scale.linearTicks(0.13, 0.87, 4);
  assert.equal(step, 0.2);
  assert.deepEqual(ticks.map((v) => Number(v.toFixed(6))), [0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(scale.logTicks(0, 2, 4), [1, 2, 5, 10, 20, 50, 100]);
  assert.deepEqual(scale.logTicks(-6, 6, 4), [1e-6, 1e-3, 1, 1e3, 1e6]);
  assert.deepEqual(scale.padRange(1, 1, false), [0.9, 1.1]);
});

test("ignore outliers: one spike of 1e4 no longer sets the range, and says it is clipped", () => {
  const ys = Array.from({ length: 200 }, (_, i) => 1 + Math.sin(i / 10) * 0.1);
  ys[120] = 1e4;
  const plain = scale.valueRange([{ ys }]);
  assert.equal(plain.hi, 1e4);
  assert.equal(plain.clipped, false);
  const robust = scale.valueRange([{ ys }], { robust: true });
  assert.ok(robust.hi < 2, `hi ${robust.hi}`);
  assert.ok(robust.lo > 0.8);
  assert.equal(robust.clipped, true);
  const calm = scale.valueRange([{ ys: [1, 2, 3, 4, 5, 6] }], { robust: true });
  assert.equal(calm.clipped, false);
  assert.deepEqual([calm.lo, calm.hi], [1, 6]);
  const logged = scale.valueRange([{ ys: [-1, 0, 10, 100], from: 0, to: 3 }], { log: true });
  assert.deepEqual([logged.lo, logged.hi], [10, 10]);
});

test("run colours: the name's palette slot, the next free one on a collision, a hashed hue past the palette", () => {
  const names = Array.from({ length: 12 }, (_, i) => `exp${i}/version_0`);
  const assign = () => {
    const used = new Set();
    return names.map((n) => {
      const c = assignColor(n, used);
      used.add(c);
      return c;
    });
  };
  const first = assign();
  assert.deepEqual(assign(), first); // same runs, same colours
  assert.equal(new Set(first.slice(0, PALETTE.length)).size, PALETTE.length); // distinct while the palette lasts
  assert.ok(first.slice(0, PALETTE.length).every((c) => PALETTE.includes(c)));
  assert.equal(first[11], colorForRun(names[11]));
  assert.equal(assignColor("solo"), PALETTE[hashName("solo") % PALETTE.length]); // no other run: its own slot
});

test("run colours at load: counted, not rescanned, and the same as assigning against every earlier run", async () => {
  const model = await js("model.js");
  const names = Array.from({ length: 40 }, (_, i) => `load${String(i).padStart(2, "0")}`);
  const expected = [];
  for (const name of names) expected.push(assignColor(name, new Set(expected)));
  const runs = names.map((name) => model.getRun(name));
  assert.deepEqual(runs.map((r) => r.color), expected);
  const first = runs[0];
  model.setRunColor(first, "#abcdef"); // picked: its slot is free for the next new run
  const next = model.getRun("load-next");
  assert.equal(next.color, assignColor("load-next", new Set(runs.map((r) => r.color))));
  model.setRunColor(first, null); // back to its name's colour among the others
  assert.equal(first.color, assignColor(first.name, new Set([...runs.slice(1), next].map((r) => r.color))));
});

test("run colours from the name alone are deterministic and valid hex", () => {
  assert.equal(colorForRun("exp0/version_0"), colorForRun("exp0/version_0"));
  assert.notEqual(colorForRun("version_0"), colorForRun("version_1"));
  assert.equal(hashName("a"), 0xe40c292c); // FNV-1a reference value
  for (const name of ["a", "run", "version_12", "üñí"]) assert.ok(isHexColor(colorForRun(name)), name);
});

test("parseJSON reads Python's NaN and Infinity", () => {
  const v = parseJSON('{"values": [NaN, Infinity, -Infinity, 1]}').values;
  assert.deepEqual(v.map(Number).map(String), ["NaN", "Infinity", "-Infinity", "1"]);
});

test("a series reset cuts the held points from its step, unless the history was loaded after it", () => {
  const s = store.newSeries("r", "t");
  store.appendColumns(s, [0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8]);
  s.loadedSeq = 10;
  assert.equal(store.resetFrom(s, 9, 2), false); // the loaded history already reflects it
  assert.equal(s.n, 4);
  assert.equal(store.resetFrom(s, 11, 2), true);
  assert.deepEqual(Array.from(s.steps.subarray(0, s.n)), [0, 1]);
  store.refreshRange(s);
  assert.equal(s.max, 6);
});

test("x labels follow the x mode", async () => {
  const { formatX } = await js("axes.js");
  assert.equal(formatX(12500, "step"), "12.5k");
  assert.equal(formatX(90, "relative"), "1m 30s");
  assert.match(formatX(1_700_000_000, "wall"), /\d\d:\d\d:\d\d$/);
});

test("compact bounds a live series: first point, bucket extremes in step order, newest points exact", () => {
  const s = store.newSeries("r", "t");
  const n = 1000;
  const steps = Array.from({ length: n }, (_, i) => i);
  const values = steps.map((i) => (i === 123 ? 1e6 : i === 456 ? -1e6 : i === 7 ? NaN : Math.sin(i)));
  store.appendColumns(s, steps, steps, values);
  assert.equal(store.compact(s, 2000, 100, 50), false); // under the limit: untouched
  assert.equal(store.compact(s, 500, 100, 50), true);
  const kept = Array.from(s.steps.subarray(0, s.n));
  const vals = Array.from(s.values.subarray(0, s.n));
  assert.ok(s.n <= 1 + 2 * 50 + 100, `${s.n} points`);
  assert.equal(kept[0], 0);
  assert.deepEqual(kept.slice(-100), steps.slice(-100)); // the live end stays exact
  assert.ok(vals.includes(1e6) && vals.includes(-1e6)); // spikes survive
  assert.ok(kept.every((v, i) => i === 0 || v > kept[i - 1])); // still strictly increasing
  assert.equal(s.decimated, true);
  store.appendPoint(s, n, n, 0); // and it keeps growing from there
  assert.equal(s.steps[s.n - 1], n);
});

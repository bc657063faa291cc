// The view state <-> URL and localStorage: `node --test tests/js`.
import { test } from "node:test";
import assert from "node:assert/strict";

const js = (name) => import(new URL(`../../lightning_stream/static/js/${name}`, import.meta.url));
const { defaultView, parseView, viewToParams, prefsOf, viewFromPrefs } = await js("state.js");
const { sortRows, nearestIndex } = await js("tooltip.js");
const { messageColumns } = await js("stream.js");
const { toCSV, fileName } = await js("export.js");
const { zoomAround, pixelToX } = await js("zoom.js");
const { hparamsText } = await js("sidebar.js");

test("a default view writes no parameters and keeps foreign ones (token)", () => {
  const params = viewToParams(defaultView(), new URLSearchParams("token=abc&run=old"));
  assert.equal(params.toString(), "token=abc");
});

test("the whole view survives a round trip through the URL", () => {
  const v = defaultView();
  Object.assign(v, {
    runFilter: "exp*",
    tagFilter: "train/* !val",
    smoothing: 0.85,
    xMode: "relative",
    logScale: true,
    logX: true,
    outliers: true,
    syncZoom: true,
    transport: "ws",
    pins: ["train/loss", "a:b"],
    hidden: ["exp0/version_1"],
    colors: { "exp0/version_0": "#12ab34" },
    zoom: { "train/loss": { x: [100, 2500.5], y: null }, "val:acc": { x: [0.1, 0.2], y: [-1, 1e-7] } },
    chartOptions: { "train/loss": { outliers: true, log: false }, "val/acc": { log: true } },
    yLimits: { "train/loss": [-0.5, 2] },
  });
  const url = viewToParams(v).toString();
  const back = parseView(new URLSearchParams(url));
  assert.deepEqual(back, v);
});

test("malformed URL values fall back instead of breaking the page", () => {
  const v = parseView(new URLSearchParams("smoothing=abc&x=furlongs&zoom=t:5,1&zoom=u:nope&color=r:red&log=yes"));
  assert.equal(v.smoothing, 0);
  assert.equal(v.xMode, "step");
  assert.deepEqual(v.zoom, {});
  assert.deepEqual(v.colors, {});
  assert.equal(v.logScale, false);
  assert.equal(parseView(new URLSearchParams("smoothing=5")).smoothing, 0.99);
});

test("preferences: saved ones apply, the URL wins, junk is ignored", () => {
  const saved = prefsOf({ ...defaultView(), smoothing: 0.3, xMode: "wall", tooltipSort: "nearest", colors: { a: "#000000", b: "bad" } }, "light");
  const prefs = viewFromPrefs(JSON.parse(JSON.stringify(saved)));
  assert.equal(prefs.smoothing, 0.3);
  assert.equal(prefs.xMode, "wall");
  assert.equal(prefs.tooltipSort, "nearest");
  assert.deepEqual(prefs.colors, { a: "#000000" });
  assert.equal(parseView(new URLSearchParams("smoothing=0.5"), prefs).smoothing, 0.5);
  assert.deepEqual(viewFromPrefs("nonsense"), defaultView());
});

test("tooltip rows sort by name, value either way, or nearness to the cursor", () => {
  const rows = [
    { run: "b", sm: 1 },
    { run: "a", sm: 3 },
    { run: "c", sm: NaN },
    { run: "d", sm: 2 },
  ];
  const names = (how, at) => sortRows(rows, how, at).map((r) => r.run);
  assert.deepEqual(names("default"), ["a", "b", "c", "d"]);
  assert.deepEqual(names("descending"), ["a", "d", "b", "c"]);
  assert.deepEqual(names("ascending"), ["c", "b", "d", "a"]);
  assert.deepEqual(names("nearest", 2.1), ["d", "a", "b", "c"]);
  assert.equal(nearestIndex(Float64Array.from([0, 10, 20]), 3, 14), 1);
  assert.equal(nearestIndex(Float64Array.from([0, 10, 20]), 3, 16), 2);
  assert.equal(nearestIndex(Float64Array.from([100, 110]), 2, 7, 100), 1);
});

test("stream messages: columns pass through, point objects become columns per series", () => {
  const cols = [{ run: "r", tag: "t", steps: [1], wall_times: [2], values: [3] }];
  assert.equal(messageColumns({ series: cols }), cols);
  const got = messageColumns({
    points: [
      { run: "r", tag: "t", step: 1, wall_time: 10, value: 0.5 },
      { run: "r", tag: "t", step: 2, wall_time: 11, value: 0.4 },
      { run: "r", tag: "u", step: 1, wall_time: 12, value: 9 },
      { bogus: true },
    ],
  });
  assert.deepEqual(got, [
    { run: "r", tag: "t", steps: [1, 2], wall_times: [10, 11], values: [0.5, 0.4] },
    { run: "r", tag: "u", steps: [1], wall_times: [12], values: [9] },
  ]);
});

test("CSV export has the server's header and quotes names that need it", () => {
  const csv = toCSV([{ run: 'a,"b"', tag: "t", steps: [1, 2], wall_times: [10.5, 11], values: [0.25, NaN] }]);
  assert.equal(csv, 'run,tag,step,wall_time,value\n"a,""b""",t,1,10.5,0.25\n"a,""b""",t,2,11,NaN\n');
  assert.equal(fileName("train/loss", "csv"), "train_loss.csv");
});

test("zoom arithmetic: wheel around the cursor, pixels to data", () => {
  assert.deepEqual(zoomAround(0, 100, 50, 0.5), [25, 75]);
  assert.deepEqual(zoomAround(0, 100, 0, 0.5), [0, 50]);
  const L = { x0: 0, sx: 2, left: 10, xlog: false };
  assert.equal(pixelToX(L, 30), 10);
  assert.equal(pixelToX({ x0: 0, sx: 100, left: 0, xlog: true }, 200), 100);
});

test("hparams render as one short line", () => {
  assert.equal(hparamsText({ lr: 0.000123456, batch: 32, opt: "adam" }), "lr=0.0001235 · batch=32 · opt=adam");
  assert.equal(hparamsText(null), "");
});

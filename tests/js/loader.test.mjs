// How the loader groups charts into /api/series requests (`node --test tests/js`).
import { test } from "node:test";
import assert from "node:assert/strict";

const { takeBatch, maxPointsFor } = await import(new URL("../../lightning_stream/static/js/loader.js", import.meta.url));

/** A chart of `runs` series whose runs list their last step as `last`. */
function chart(tag, runs, last, extra = {}) {
  const run = { listedStep: last };
  return { tag, width: 600, loadState: "unloaded", onScreen: true, queued: true, series: Array.from({ length: runs }, () => ({ run })), ...extra };
}

test("the page's first request is the top chart alone", () => {
  const queue = [chart("a", 300, 199), chart("b", 300, 199)];
  assert.deepEqual(takeBatch(queue, true).map((c) => c.tag), ["a"]);
  assert.deepEqual(queue.map((c) => c.tag), ["b"]);
});

test("later requests take the next charts together, up to a number of tags and of points", () => {
  const many = Array.from({ length: 10 }, (_, i) => chart(`t${i}`, 300, 199)); // 60,000 points each
  const first = takeBatch(many, false, { tags: 8, points: 250000 });
  assert.deepEqual(first.map((c) => c.tag), ["t0", "t1", "t2", "t3"]); // a fifth would pass 250,000 points
  assert.ok(first.every((c) => c.queued === false));
  const deep = Array.from({ length: 10 }, (_, i) => chart(`d${i}`, 1, 99999)); // max_points caps each
  assert.equal(maxPointsFor(deep[0]), 1200);
  assert.deepEqual(takeBatch(deep, false, { tags: 8, points: 250000 }).length, 8);
  const huge = [chart("h", 3000, 199999), chart("i", 1, 10)];
  assert.deepEqual(takeBatch(huge, false, { tags: 8, points: 250000 }).map((c) => c.tag), ["h"]); // one always goes
});

test("charts loaded meanwhile or scrolled away leave the queue without a request", () => {
  const queue = [chart("gone", 1, 1, { onScreen: false }), chart("done", 1, 1, { loadState: "loaded" }), chart("c", 1, 1)];
  assert.deepEqual(takeBatch(queue, true).map((c) => c.tag), ["c"]);
  assert.equal(queue.length, 0);
  assert.deepEqual(takeBatch([chart("x", 1, 1, { onScreen: false })], false), []);
});

test("runs without a listed step count as max_points each", () => {
  const queue = [chart("a", 200, null), chart("b", 200, null)]; // 200 x 1,200 = 240,000
  assert.deepEqual(takeBatch(queue, false, { tags: 8, points: 250000 }).map((c) => c.tag), ["a"]);
});

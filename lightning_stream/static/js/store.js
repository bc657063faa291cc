/* One (run, tag) series held by the page: three typed arrays that grow by doubling (no object per
 * point), a cached value range, and the restart (purge) rule shared with the server's Series:
 * a step at or below the last held one drops every held point with step >= it, so a run resumed
 * from a checkpoint shows its new curve, and re-sent points are idempotent. Pure: no DOM. */

import { newBlocks, truncateBlocks } from "./decimate.js";

const EMPTY = new Float64Array(0); // shared by series that hold nothing yet (6,000 of them at 300 x 20)

export function newSeries(run, tag) {
  return {
    run, // the Run object (sidebar's), or any value the caller keys by
    tag,
    n: 0,
    steps: EMPTY, // int64 steps are exact up to 2^53; arrays are allocated on the first point
    values: EMPTY,
    walls: EMPTY,
    loadedSeq: -Infinity, // stream messages with seq <= this are already in the loaded history
    decimated: false, // the loaded history is a min/max summary (the server's max_points)
    smooth: null, // Float32Array, computed lazily for the current weight (smooth.js)
    smoothN: 0,
    smoothW: -1,
    smoothLast: 0,
    smoothCount: 0,
    min: Infinity,
    max: -Infinity,
    minPos: Infinity, // smallest value > 0, for the log scale
    rangeStale: false,
    cuts: 0, // counts every change other than an append (purge, reset, reload, compaction): chart.js
    // redraws a chart whose held points only grew past what it shows only when this moved
    rawBlocks: newBlocks(), // min/max per 16 values: a redraw skips blocks within one pixel column
    smoothBlocks: newBlocks(),
  };
}

export function grow(s, need) {
  if (need <= s.steps.length) return;
  let cap = Math.max(64, s.steps.length);
  while (cap < need) cap *= 2;
  for (const name of ["steps", "values", "walls"]) {
    const next = new Float64Array(cap);
    next.set(s[name].subarray(0, s.n));
    s[name] = next;
  }
}

/** First index in arr[0:n] whose value is >= x (n when none). */
export function lowerBound(arr, n, x) {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Keep only the first `n` points (and what was derived from them). */
export function truncate(s, n) {
  if (n >= s.n) return;
  s.n = n;
  s.cuts += 1;
  s.rangeStale = true;
  truncateBlocks(s.rawBlocks, n);
  truncateBlocks(s.smoothBlocks, n);
  if (s.smoothN > n) s.smoothN = -1; // recompute smoothing from scratch
}

/** Append one point, applying the purge rule. */
export function appendPoint(s, step, wall, value) {
  if (s.n > 0 && step <= s.steps[s.n - 1]) truncate(s, lowerBound(s.steps, s.n, step));
  grow(s, s.n + 1);
  s.steps[s.n] = step;
  s.walls[s.n] = wall;
  s.values[s.n] = value;
  s.n += 1;
  if (Number.isFinite(value)) {
    if (value < s.min) s.min = value;
    if (value > s.max) s.max = value;
    if (value > 0 && value < s.minPos) s.minPos = value;
  }
}

/** A series-scoped `reset` (the run was resumed below its last step): drop the held points from
 * `fromStep` on, unless the history was loaded after that reset (`seq` <= loadedSeq). */
export function resetFrom(s, seq, fromStep) {
  if (seq !== null && seq <= s.loadedSeq) return false;
  truncate(s, lowerBound(s.steps, s.n, fromStep));
  return true;
}

/** Append columns (arrays of equal length, steps ascending), as many appendPoint calls. */
export function appendColumns(s, steps, walls, values) {
  grow(s, s.n + steps.length);
  for (let i = 0; i < steps.length; i++) appendPoint(s, num(steps[i]), num(walls[i]), num(values[i]));
}

/** Replace everything held by the given columns (a loaded history): the arrays are sized once from
 * the answer's length (kept when large enough) and filled in one pass. A server answer's steps
 * ascend; columns that do not go through appendColumns, which applies the purge rule. */
export function replaceColumns(s, steps, walls, values) {
  clearSeries(s);
  const n = steps.length;
  if (s.steps.length < n) {
    s.steps = new Float64Array(n);
    s.values = new Float64Array(n);
    s.walls = new Float64Array(n);
  }
  const st = s.steps;
  let prev = -Infinity;
  for (let i = 0; i < n; i++) {
    const step = num(steps[i]);
    if (!(step > prev)) {
      appendColumns(s, steps, walls, values); // out of order (or NaN): point by point
      return;
    }
    st[i] = prev = step;
  }
  const wt = s.walls;
  for (let i = 0; i < n; i++) wt[i] = num(walls[i]);
  const vs = s.values;
  let min = Infinity;
  let max = -Infinity;
  let minPos = Infinity;
  for (let i = 0; i < n; i++) {
    const v = num(values[i]);
    vs[i] = v;
    if (!Number.isFinite(v)) continue; // as appendPoint: NaN and the infinities are not in the range
    if (v < min) min = v;
    if (v > max) max = v;
    if (v > 0 && v < minPos) minPos = v;
  }
  s.n = n;
  s.min = min;
  s.max = max;
  s.minPos = minPos;
  s.rangeStale = false; // the range is exact: no rescan at the first draw
}

export function clearSeries(s) {
  truncate(s, 0);
  s.smoothN = -1;
  s.rangeStale = true;
  s.min = Infinity;
  s.max = -Infinity;
  s.minPos = Infinity;
  s.loadedSeq = -Infinity;
  s.decimated = false;
}

/** Bring min/max/minPos up to date after a purge cut points away. */
export function refreshRange(s) {
  if (!s.rangeStale) return;
  s.rangeStale = false;
  s.min = Infinity;
  s.max = -Infinity;
  s.minPos = Infinity;
  for (let i = 0; i < s.n; i++) {
    const v = s.values[i];
    if (!Number.isFinite(v)) continue;
    if (v < s.min) s.min = v;
    if (v > s.max) s.max = v;
    if (v > 0 && v < s.minPos) s.minPos = v;
  }
}

/**
 * Bound what a live series holds: past `limit` points, everything but the newest `keepRaw` becomes
 * the minimum and maximum of each of `buckets` buckets (first point kept), as the server's
 * max_points does. A zoom still shows exact points (they come from the server). Returns whether it
 * compacted. In place: O(n), no allocation.
 */
export function compact(s, limit, keepRaw, buckets) {
  if (s.n <= limit) return false;
  const old = s.n - keepRaw;
  const size = Math.max(1, Math.ceil(old / buckets));
  const { steps, walls, values } = s;
  let w = 0;
  const keep = (i) => {
    steps[w] = steps[i];
    walls[w] = walls[i];
    values[w] = values[i];
    w += 1;
  };
  keep(0);
  for (let b = 1; b < old; b += size) {
    const end = Math.min(old, b + size);
    let lo = -1;
    let hi = -1;
    for (let i = b; i < end; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) continue;
      if (lo < 0 || v < values[lo]) lo = i;
      if (hi < 0 || v > values[hi]) hi = i;
    }
    if (lo < 0) keep(b); // nothing finite: one point keeps the gap
    else {
      keep(Math.min(lo, hi));
      if (hi !== lo) keep(Math.max(lo, hi));
    }
  }
  for (let i = old; i < s.n; i++) keep(i);
  truncate(s, 0); // summaries and smoothing are rebuilt from the compacted points
  s.n = w;
  s.smoothN = -1;
  s.decimated = true;
  return true;
}

/** A JSON number, or the strings Python's json writes for non-finite floats, as a number. */
export function num(v) {
  if (typeof v === "number") return v;
  if (v === null || v === undefined) return NaN;
  return Number(v); // "NaN", "Infinity", "-Infinity"
}

/* TensorBoard's smoothing: an exponential moving average, debiased so that the first points are not
 * pulled towards zero (vz_line_chart2 `resmoothDataset`). Incremental: new points continue from the
 * saved accumulator held on the series (store.js). Non-finite values pass through unsmoothed. Pure. */

/** The smoothed values of series `s` at weight `w` (a Float32Array of at least s.n entries). */
export function smoothed(s, w) {
  if (s.smoothW !== w || s.smoothN < 0 || !s.smooth || s.smooth.length < s.n) {
    if (!s.smooth || s.smooth.length < s.n) {
      const next = new Float32Array(s.values.length);
      if (s.smooth && s.smoothN > 0) next.set(s.smooth.subarray(0, s.smoothN));
      s.smooth = next;
    }
    if (s.smoothW !== w || s.smoothN < 0) {
      s.smoothN = 0;
      s.smoothBlocks.done = 0;
      s.smoothLast = 0;
      s.smoothCount = 0;
      s.smoothW = w;
    }
  }
  let last = s.smoothLast;
  let count = s.smoothCount;
  for (let i = s.smoothN; i < s.n; i++) {
    const v = s.values[i];
    if (!Number.isFinite(v)) {
      s.smooth[i] = v;
      continue;
    }
    last = last * w + (1 - w) * v;
    count += 1;
    s.smooth[i] = w === 1 ? last : last / (1 - Math.pow(w, count));
  }
  s.smoothLast = last;
  s.smoothCount = count;
  s.smoothN = s.n;
  return s.smooth;
}

/** Smoothing of plain arrays (a zoom window's exact points): the same formula; `seed`, when finite,
 * is the smoothed value just before the window, so the curve continues instead of restarting. */
export function smoothArray(values, w, seed = NaN) {
  const out = new Float64Array(values.length);
  const seeded = Number.isFinite(seed);
  let last = seeded ? seed : 0;
  let count = seeded ? Infinity : 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    last = last * w + (1 - w) * v;
    count += 1;
    out[i] = w === 1 ? last : last / (1 - Math.pow(w, count));
  }
  return out;
}

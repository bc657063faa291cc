/* Axes: nice linear and log ticks, the y range of what is visible, and the robust ("ignore
 * outliers") range. Pure: numbers in, numbers out. */

export function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

/** About `count` round ticks covering [lo, hi]: {ticks, step}. */
export function linearTicks(lo, hi, count) {
  const step = niceStep(hi - lo, count);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return { ticks, step };
}

/** Ticks for a log axis; lo and hi are log10 values, the ticks are plain values (1, 2, 5 x 10^k). */
export function logTicks(lo, hi, count) {
  const ticks = [];
  const d0 = Math.floor(lo);
  const d1 = Math.ceil(hi);
  const every = Math.max(1, Math.ceil((d1 - d0) / count));
  const mults = d1 - d0 <= 2 ? [1, 2, 5] : [1];
  for (let d = d0; d <= d1; d += every) {
    for (const m of mults) {
      const lv = d + Math.log10(m);
      if (lv >= lo - 1e-9 && lv <= hi + 1e-9) ticks.push(m * Math.pow(10, d));
    }
  }
  return ticks;
}

/** The q-quantile (0..1) of a sorted array, linearly interpolated. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const i = Math.floor(pos);
  const frac = pos - i;
  return i + 1 < sorted.length ? sorted[i] + (sorted[i + 1] - sorted[i]) * frac : sorted[i];
}

/**
 * Range of the finite (and, for a log axis, positive) values in `arrays` (each {ys, from, to}).
 * With `robust`, the range is the 2nd..98th percentile widened by 10 % of that span, and
 * `clipped` tells whether some value falls outside (TensorBoard's "ignore outliers" uses
 * 5..95 %; 2..98 keeps more of a curve while one spike of 1e4 no longer flattens it).
 */
export function valueRange(arrays, { log = false, robust = false } = {}) {
  let lo = Infinity;
  let hi = -Infinity;
  const sample = robust ? [] : null;
  for (const { ys, from = 0, to = ys.length } of arrays) {
    for (let i = from; i < to; i++) {
      const v = ys[i];
      if (!Number.isFinite(v) || (log && !(v > 0))) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (sample) sample.push(v);
    }
  }
  if (!robust || sample.length < 5) return { lo, hi, clipped: false };
  sample.sort((a, b) => a - b);
  const tr = (v) => (log ? Math.log10(v) : v);
  const back = (v) => (log ? Math.pow(10, v) : v);
  const qlo = tr(quantile(sample, 0.02));
  const qhi = tr(quantile(sample, 0.98));
  const margin = (qhi - qlo) * 0.1;
  const rlo = Math.max(tr(lo), qlo - margin);
  const rhi = Math.min(tr(hi), qhi + margin);
  return { lo: back(rlo), hi: back(rhi), clipped: rlo > tr(lo) || rhi < tr(hi) };
}

/** Pad a [lo, hi] axis range (already log10 for a log axis) so lines do not touch the frame. */
export function padRange(lo, hi, log) {
  if (lo === hi) {
    const pad = log ? 0.5 : Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

/* Drawing a long series cheaply: per-block min/max summaries, and a polyline decimated per device-pixel
 * column (first, min, max, last of every column, so a spike always survives). Pure: the path is any
 * object with moveTo/lineTo (a CanvasRenderingContext2D, or a recorder in the tests). */

export const BLOCK_SHIFT = 4; // min/max summaries over blocks of 16 points
export const BLOCK = 1 << BLOCK_SHIFT;

const NONE = new Float64Array(0);

export function newBlocks() {
  return { min: NONE, max: NONE, done: 0 }; // allocated when the first block completes
}

/** Summarise every complete block of 16 values (incremental: done blocks are kept). A block holding
 * a non-finite value gets NaN, so drawing falls back to its points. */
export function blocksFor(blk, ys, n) {
  const complete = n >> BLOCK_SHIFT;
  if (blk.min.length < complete) {
    let cap = Math.max(16, blk.min.length);
    while (cap < complete) cap *= 2;
    const min = new Float64Array(cap);
    const max = new Float64Array(cap);
    min.set(blk.min.subarray(0, blk.done));
    max.set(blk.max.subarray(0, blk.done));
    blk.min = min;
    blk.max = max;
  }
  for (let b = blk.done; b < complete; b++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = b << BLOCK_SHIFT, end = i + BLOCK; i < end; i++) {
      const v = ys[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (!Number.isFinite(v)) {
        lo = NaN;
        hi = NaN;
        break;
      }
    }
    blk.min[b] = lo;
    blk.max[b] = hi;
  }
  blk.done = complete;
  return blk;
}

/** Forget the summaries of blocks past `n` points (the series was cut back). */
export function truncateBlocks(blk, n) {
  const complete = n >> BLOCK_SHIFT;
  if (blk.done > complete) blk.done = complete;
}

/* Transform of a y value for the axis: log10 for a log axis (NaN when not positive). */
function ty(v, log) {
  return log ? (v > 0 ? Math.log10(v) : NaN) : v;
}

/**
 * Add xs/ys (n points, xs ascending) to `path` as a polyline decimated per device-pixel column.
 * L: {x0, sx, y0, sy, log, left, top, dpr, xlog, xoff}: x pixel = left + (x - xoff - x0) * sx
 * (log10 of x - xoff when xlog), y pixel = top + (y0 - y) * sy, in CSS pixels; only indexes
 * [from, to) are drawn.
 * Returns the number of vertices emitted.
 */
export function strokeDecimated(path, xs, ys, n, L, blk, from = 0, to = n) {
  const { x0, sx, y0, sy, log, left, top, dpr } = L;
  const xlog = !!L.xlog;
  const usable = blk && !xlog ? blk.done << BLOCK_SHIFT : 0;
  const scaleX = sx * dpr;
  const offX = left * dpr - x0 * scaleX;
  const xoff = L.xoff || 0; // relative time: each run's own start
  const px = (x) => {
    const u = x - xoff;
    return Math.round(offX + (xlog ? (u > 0 ? Math.log10(u) : NaN) : u) * scaleX);
  };
  let col = NaN;
  let first = 0;
  let lo = 0;
  let hi = 0;
  let lastY = 0;
  let pen = false;
  let open = false;
  let vertices = 0;
  const flush = () => {
    const x = col / dpr;
    if (pen) path.lineTo(x, first);
    else path.moveTo(x, first);
    vertices += 1;
    if (lo !== hi) {
      path.lineTo(x, lo);
      path.lineTo(x, hi);
      vertices += 2;
    }
    // one value in the column (first === lastY): a second vertex there would be a zero-length
    // segment, which a butt-capped stroke leaves out; a sparse series is one vertex per point, not
    // two (half the canvas calls of a chart of 300 runs x 200 steps). After a moveTo it stays, as
    // before: a lone point is a path of its own.
    if (lo !== hi || !pen) {
      path.lineTo(x, lastY);
      vertices += 1;
    }
    pen = true;
  };
  let i = from;
  while (i < to) {
    if (i < usable && (i & (BLOCK - 1)) === 0 && i + BLOCK <= to) {
      const b = i >> BLOCK_SHIFT;
      const bmin = ty(blk.min[b], log);
      const bmax = log ? Math.log10(blk.max[b]) : blk.max[b];
      if (bmin === bmin) {
        const pa = px(xs[i]);
        if (pa === px(xs[i + BLOCK - 1])) {
          const pyTop = top + (y0 - bmax) * sy;
          const pyBottom = top + (y0 - bmin) * sy;
          if (open && pa === col) {
            if (pyTop < lo) lo = pyTop;
            if (pyBottom > hi) hi = pyBottom;
          } else {
            if (open) flush();
            col = pa;
            first = top + (y0 - ty(ys[i], log)) * sy;
            lo = pyTop;
            hi = pyBottom;
            open = true;
          }
          lastY = top + (y0 - ty(ys[i + BLOCK - 1], log)) * sy;
          i += BLOCK;
          continue;
        }
      }
    }
    const v = ty(ys[i], log);
    const p = px(xs[i]);
    if (!Number.isFinite(v) || p !== p) {
      if (open) flush();
      open = false;
      pen = false; // a gap in the line
      i += 1;
      continue;
    }
    const py = top + (y0 - v) * sy;
    if (open && p === col) {
      if (py < lo) lo = py;
      if (py > hi) hi = py;
      lastY = py;
    } else {
      if (open) flush();
      col = p;
      first = lo = hi = lastY = py;
      open = true;
    }
    i += 1;
  }
  if (open) flush();
  return vertices;
}

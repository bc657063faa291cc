/* Zoom gestures on a chart's overlay: drag a band to zoom x (hold Shift for a box: x and y), wheel
 * with Ctrl/⌘ (or a trackpad pinch, which Chromium reports as a Ctrl wheel) zooms x around the
 * cursor, double-click resets. The window lives in view.zoom[tag] (so the URL carries it) and holds
 * while points stream in; with "sync zoom" every chart takes the same x window.
 * `pixelToX` and `zoomAround` are pure (node-tested). */

/** Data x of overlay pixel `px` (before the log transform is undone when xlog). */
export function pixelToX(L, px) {
  const t = L.x0 + (px - L.left) / L.sx;
  return L.xlog ? Math.pow(10, t) : t;
}

export function pixelToY(L, py) {
  const t = L.y0 - (py - L.top) / L.sy;
  return L.log ? Math.pow(10, t) : t;
}

/** The window [a, b] scaled by `factor` around `x` (factor < 1 zooms in). */
export function zoomAround(a, b, x, factor) {
  return [x - (x - a) * factor, x + (b - x) * factor];
}

/** Wire the gestures of `chart`; `setZoom(chart, win | null, debounce)` applies (and syncs, saves,
 * re-queries the window's points: at once, or when a wheel gesture settles). */
export function bindZoom(chart, { setZoom, redrawHover }) {
  const ov = chart.overlay;
  const local = (e) => {
    const r = ov.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  ov.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !chart.layout) return;
    const [x, y] = local(e);
    chart.drag = { x0: x, y0: y, x1: x, y1: y, xy: e.shiftKey };
    ov.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  ov.addEventListener("pointermove", (e) => {
    const [x, y] = local(e);
    chart.hover = { x, y, cx: e.clientX, cy: e.clientY };
    if (chart.drag) {
      chart.drag.x1 = x;
      chart.drag.y1 = y;
      chart.drag.xy = chart.drag.xy || e.shiftKey;
    }
    redrawHover(chart);
  });
  const finish = (e) => {
    const d = chart.drag;
    if (!d) return;
    chart.drag = null;
    const L = chart.layout;
    if (L && Math.abs(d.x1 - d.x0) >= 5) {
      const clamp = (px) => Math.max(L.left, Math.min(L.left + L.pw, px));
      const xa = pixelToX(L, clamp(Math.min(d.x0, d.x1)));
      const xb = pixelToX(L, clamp(Math.max(d.x0, d.x1)));
      let y = null;
      if (d.xy && Math.abs(d.y1 - d.y0) >= 5) {
        const clampY = (py) => Math.max(L.top, Math.min(L.top + L.ph, py));
        y = [pixelToY(L, clampY(Math.max(d.y0, d.y1))), pixelToY(L, clampY(Math.min(d.y0, d.y1)))];
      }
      if (xb > xa) setZoom(chart, { x: [xa, xb], y });
    }
    redrawHover(chart);
    void e;
  };
  ov.addEventListener("pointerup", finish);
  ov.addEventListener("pointercancel", () => {
    chart.drag = null;
    redrawHover(chart);
  });
  ov.addEventListener("pointerleave", () => {
    if (chart.drag) return;
    chart.hover = null;
    redrawHover(chart);
  });
  ov.addEventListener("dblclick", () => setZoom(chart, null));
  ov.addEventListener(
    "wheel",
    (e) => {
      const L = chart.layout;
      if (!L || !(e.ctrlKey || e.metaKey)) return; // a plain wheel scrolls the page
      e.preventDefault();
      const [px] = local(e);
      const factor = Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.002)));
      const at = L.x0 + (px - L.left) / L.sx;
      let [a, b] = zoomAround(L.x0, L.x1, at, factor);
      if (L.xlog) [a, b] = [Math.pow(10, a), Math.pow(10, b)];
      const z = chart.zoom();
      setZoom(chart, { x: [a, b], y: z ? z.y : null }, true);
    },
    { passive: false },
  );
}

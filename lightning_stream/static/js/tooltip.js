/* Hover readout: at the hovered x, the nearest point of every visible run (smoothed and raw value,
 * step, wall and relative time), sorted as the user chose; dots on the overlay canvas, so the chart
 * itself is not redrawn. `rowsAt` and `sortRows` are pure (node-tested). */

import { escapeHtml, formatClock, formatDuration, formatValue } from "./format.js";
import { view } from "./model.js";
import { lowerBound } from "./store.js";

export const SORTS = ["default", "descending", "ascending", "nearest"];

/** Nearest index to x in ascending xs[0:n] (x values shifted by xoff). */
export function nearestIndex(xs, n, x, xoff = 0) {
  let i = lowerBound(xs, n, x + xoff);
  if (i >= n) i = n - 1;
  else if (i > 0 && x + xoff - xs[i - 1] < xs[i] - (x + xoff)) i -= 1;
  return i;
}

/** Sort tooltip rows: default (run name), descending/ascending (shown value), nearest (to the cursor's value `at`). */
export function sortRows(rows, how, at) {
  const key = (r) => (Number.isFinite(r.sm) ? r.sm : -Infinity);
  const byName = (a, b) => (a.run < b.run ? -1 : a.run > b.run ? 1 : 0);
  const sorted = rows.slice();
  if (how === "descending") sorted.sort((a, b) => key(b) - key(a) || byName(a, b));
  else if (how === "ascending") sorted.sort((a, b) => key(a) - key(b) || byName(a, b));
  else if (how === "nearest") sorted.sort((a, b) => Math.abs(key(a) - at) - Math.abs(key(b) - at) || byName(a, b));
  else sorted.sort(byName);
  return sorted;
}

/** One row per drawn run at data x `x` (in the chart's x mode, before any log transform). */
export function rowsAt(layout, x) {
  const rows = [];
  for (const d of layout.drawn) {
    let best = null;
    for (const p of d.parts) {
      const xs = layout.mode === "step" ? p.steps : p.walls;
      const off = layout.mode === "step" ? 0 : d.xoff;
      const from = p.from || 0;
      if (p.n <= from) continue;
      const i = Math.max(from, nearestIndex(xs, p.n, x, off));
      const dist = Math.abs(xs[i] - off - x);
      if (!best || dist < best.dist) best = { p, i, dist, x: xs[i] - off };
    }
    if (!best) continue;
    const { p, i } = best;
    const value = p.values[i];
    rows.push({
      run: d.s.run.name,
      color: d.s.run.color,
      value,
      sm: p.smooth ? p.smooth[i] : value,
      step: p.steps[i],
      wall: p.walls[i],
      rel: p.walls[i] - d.s.walls[0],
      x: best.x,
    });
  }
  return rows;
}

export function drawHover(chart, tip) {
  const { octx, dpr, width: W, height: H } = chart;
  octx.setTransform(dpr, 0, 0, dpr, 0, 0);
  octx.clearRect(0, 0, W, H);
  const L = chart.layout;
  const hv = chart.hover;
  if (chart.drag) drawDragBox(chart);
  if (!hv || !L || chart.drag || hv.x < L.left || hv.x > L.left + L.pw) {
    tip.hidden = true;
    return;
  }
  const tx = L.x0 + (hv.x - L.left) / L.sx;
  const x = L.xlog ? Math.pow(10, tx) : tx;
  const tyv = L.y0 - (hv.y - L.top) / L.sy;
  const at = L.log ? Math.pow(10, tyv) : tyv;
  const rows = sortRows(rowsAt(L, x), view.tooltipSort, at);
  if (rows.length === 0) {
    tip.hidden = true;
    return;
  }
  const css = getComputedStyle(document.documentElement);
  octx.strokeStyle = css.getPropertyValue("--axis").trim();
  octx.lineWidth = 1;
  octx.setLineDash([3, 3]);
  octx.beginPath();
  octx.moveTo(Math.round(hv.x) + 0.5, L.top);
  octx.lineTo(Math.round(hv.x) + 0.5, L.top + L.ph);
  octx.stroke();
  octx.setLineDash([]);
  for (const r of rows) {
    const yv = L.log ? (r.sm > 0 ? Math.log10(r.sm) : NaN) : r.sm;
    const xv = L.xlog ? Math.log10(r.x) : r.x;
    if (!Number.isFinite(yv) || !Number.isFinite(xv)) continue;
    octx.fillStyle = r.color;
    octx.strokeStyle = css.getPropertyValue("--card").trim();
    octx.lineWidth = 1.5;
    octx.beginPath();
    octx.arc(L.left + (xv - L.x0) * L.sx, L.top + (L.y0 - yv) * L.sy, 3.5, 0, Math.PI * 2);
    octx.fill();
    octx.stroke();
  }
  const smoothCol = view.smoothing > 0;
  let html = `<div class="tip-title">${escapeHtml(chart.tag)} <span class="tip-sort">sorted: ${view.tooltipSort}</span></div><table><tr><th></th><th>run</th>`;
  if (smoothCol) html += "<th>smoothed</th>";
  html += "<th>value</th><th>step</th><th>time</th><th>relative</th></tr>";
  for (const r of rows) {
    html += `<tr><td><span class="swatch" style="display:inline-block;background:${r.color}"></span></td>`;
    html += `<td>${escapeHtml(r.run)}</td>`;
    if (smoothCol) html += `<td>${formatValue(r.sm)}</td>`;
    html += `<td>${formatValue(r.value)}</td><td>${r.step}</td>`;
    html += `<td>${Number.isFinite(r.wall) ? formatClock(r.wall * 1000) : ""}</td>`;
    html += `<td>${formatDuration(r.rel)}</td></tr>`;
  }
  html += "</table>";
  tip.innerHTML = html;
  tip.hidden = false;
  const tw = tip.offsetWidth;
  const th = tip.offsetHeight;
  let left = hv.cx + 16;
  if (left + tw > window.innerWidth - 8) left = hv.cx - tw - 16;
  let topPx = hv.cy + 16;
  if (topPx + th > window.innerHeight - 8) topPx = hv.cy - th - 16;
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${Math.max(4, topPx)}px`;
}

function drawDragBox(chart) {
  const { octx } = chart;
  const L = chart.layout;
  const d = chart.drag;
  if (!L) return;
  const x0 = Math.max(L.left, Math.min(d.x0, d.x1));
  const x1 = Math.min(L.left + L.pw, Math.max(d.x0, d.x1));
  const y0 = d.xy ? Math.max(L.top, Math.min(d.y0, d.y1)) : L.top;
  const y1 = d.xy ? Math.min(L.top + L.ph, Math.max(d.y0, d.y1)) : L.top + L.ph;
  octx.fillStyle = "rgba(124, 140, 255, 0.15)";
  octx.strokeStyle = "rgba(124, 140, 255, 0.8)";
  octx.lineWidth = 1;
  octx.fillRect(x0, y0, x1 - x0, y1 - y0);
  octx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
}

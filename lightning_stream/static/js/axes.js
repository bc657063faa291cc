/* A chart's frame: grid, axes, tick labels and axis names, for linear or log y, and x as step,
 * relative time or wall time (log x for the first two). Draws on a 2D context given the layout
 * `L` chart.js computed and the theme colours. */

import { formatClock, formatDuration, formatStep } from "./format.js";
import { linearTicks, logTicks } from "./scale.js";

/** A label for an x value (before the log transform) in the chart's x mode. */
export function formatX(v, mode) {
  if (mode === "relative") return formatDuration(v);
  if (mode === "wall") return formatClock(v * 1000);
  return formatStep(v);
}

export function drawAxes(ctx, L, yTicks, yLabels, theme) {
  const { left, top, pw, ph } = L;
  const xs = L.xlog ? logTicks(L.x0, L.x1, Math.max(2, Math.round(pw / 90))).map((v) => Math.log10(v)) : linearTicks(L.x0, L.x1, Math.max(2, Math.round(pw / 90))).ticks;
  ctx.lineWidth = 1;
  ctx.strokeStyle = theme.grid;
  ctx.beginPath();
  for (const v of yTicks) {
    const y = Math.round(top + (L.y0 - v) * L.sy) + 0.5;
    ctx.moveTo(left, y);
    ctx.lineTo(left + pw, y);
  }
  for (const v of xs) {
    const x = Math.round(left + (v - L.x0) * L.sx) + 0.5;
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + ph);
  }
  ctx.stroke();
  ctx.strokeStyle = theme.axis;
  ctx.beginPath();
  ctx.moveTo(left + 0.5, top);
  ctx.lineTo(left + 0.5, top + ph + 0.5);
  ctx.lineTo(left + pw, top + ph + 0.5);
  ctx.stroke();
  ctx.fillStyle = theme.muted;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  yTicks.forEach((v, i) => {
    const y = top + (L.y0 - v) * L.sy;
    if (y >= top - 1 && y <= top + ph + 1) ctx.fillText(yLabels[i], left - 5, y);
  });
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of xs) {
    const x = left + (v - L.x0) * L.sx;
    const label = formatX(L.xlog ? Math.pow(10, v) : v, L.mode);
    ctx.fillText(label, Math.min(Math.max(x, left + 10), left + pw - 10), top + ph + 4);
  }
  const xName = { step: "step", relative: "relative time", wall: "wall time" }[L.mode] + (L.xlog ? " (log)" : "");
  ctx.fillText(xName, left + pw / 2, top + ph + 19);
  ctx.save();
  ctx.translate(9, top + ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(L.log ? "value (log)" : "value", 0, 0);
  ctx.restore();
}

/* Number, step, time and HTML formatting for axes, tooltips and the status panel. Pure. */

export function trimZeros(s) {
  return s.includes("e") || !s.includes(".") ? s : s.replace(/\.?0+$/, "");
}

export function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-4)) return v.toExponential(3).replace("e+", "e");
  return trimZeros(v.toPrecision(5));
}

export function formatStep(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trimZeros((v / 1e9).toFixed(2))}G`;
  if (a >= 1e6) return `${trimZeros((v / 1e6).toFixed(2))}M`;
  if (a >= 1e4) return `${trimZeros((v / 1e3).toFixed(1))}k`;
  return String(Math.round(v * 1000) / 1000);
}

/** A tick label for `v` on an axis whose ticks are `step` apart. */
export function formatTick(v, step) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) {
    const digits = Math.max(0, Math.min(3, Math.ceil(Math.log10(a / step) - 1e-9)));
    return v.toExponential(digits).replace("e+", "e");
  }
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(decimals);
}

export function formatLogTick(v) {
  const e = Math.floor(Math.log10(v) + 1e-9);
  if (e >= -3 && e <= 4) return trimZeros(v.toPrecision(3));
  const m = Math.round(v / Math.pow(10, e));
  return `${m === 1 ? "" : `${m}×`}1e${e}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

const pad = (x) => String(x).padStart(2, "0");

/** Local clock time of `ms` (epoch milliseconds); the date too unless it is `today`. */
export function formatClock(ms, today = new Date()) {
  const d = new Date(ms);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function formatCount(n) {
  if (n >= 1e6) return `${trimZeros((n / 1e6).toFixed(1))}M`;
  if (n >= 1e4) return `${trimZeros((n / 1e3).toFixed(1))}k`;
  return String(n);
}

const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

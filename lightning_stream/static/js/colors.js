/* Stable run colours. A run's preferred colour is a palette slot chosen by a hash of its name (FNV-1a),
 * so it does not depend on when the run appeared; when that slot is taken by a run already shown,
 * the next free slot is used (runs are assigned in name order at load), and past the palette a hue
 * from the hash. Same runs, same colours: across reloads and machines. A colour the user picked
 * overrides it (kept in the URL and localStorage by state.js). Pure. */

/** Ten hues far apart on dark and light backgrounds (no two greens or two blues side by side). */
export const PALETTE = ["#3b9eff", "#ff8c2b", "#2fbf71", "#e5484d", "#a875ff", "#e0c200", "#ff5fa2", "#5fe0e8", "#c0793f", "#c8c8c8"];

/** 32-bit FNV-1a of a string's UTF-16 code units. */
export function hashName(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function hslToHex(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    const c = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255)
      .toString(16)
      .padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

/** The colour of run `name` given the colours already `used` (a Set): its hash's palette slot, else
 * the next free one, else a hue from the hash. */
export function assignColor(name, used = new Set()) {
  const h = hashName(String(name));
  for (let k = 0; k < PALETTE.length; k++) {
    const c = PALETTE[(h + k) % PALETTE.length];
    if (!used.has(c)) return c;
  }
  return colorForRun(name);
}

/** A colour from the name alone: a hue from the hash, two lightness levels from another bit. */
export function colorForRun(name) {
  const h = hashName(String(name));
  const hue = ((h % 3600) / 10 + 17) % 360;
  const light = (h >>> 12) & 1 ? 0.6 : 0.52;
  return hslToHex(hue, 0.72, light);
}

export function isHexColor(text) {
  return typeof text === "string" && /^#[0-9a-f]{6}$/i.test(text);
}

/* Stable run colours: a run's colour is a function of its name only (FNV-1a hash -> hue), so it
 * is the same across reloads, machines and whatever other runs are present. A colour the user
 * picked overrides it (kept in the URL and localStorage by state.js). Pure. */

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

/** The default colour of run `name`: a hue from the hash, two lightness levels from another bit. */
export function colorForRun(name) {
  const h = hashName(String(name));
  const hue = ((h % 3600) / 10 + 17) % 360;
  const light = (h >>> 12) & 1 ? 0.6 : 0.52;
  return hslToHex(hue, 0.72, light);
}

export function isHexColor(text) {
  return typeof text === "string" && /^#[0-9a-f]{6}$/i.test(text);
}

/* Run and tag filters: the sidebar's pattern language, and escaping for the server's fnmatch globs.
 * Pure: no DOM, tested with `node --test tests/js`. */

/** A glob (`*`, `?`, `[ab]`, `[!ab]`) as a case-insensitive RegExp on the whole name. */
export function globToRegExp(glob) {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) {
        re += "\\[";
      } else {
        let body = glob.slice(i + 1, end).replace(/\\/g, "\\\\");
        if (body[0] === "!") body = "^" + body.slice(1);
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "i");
}

/** Space/comma separated patterns; a pattern with * ? [ is a glob on the whole name, a plain word
 * matches anywhere; a leading ! excludes. Empty text matches everything. */
export function makeMatcher(text) {
  const include = [];
  const exclude = [];
  for (let p of String(text || "").split(/[\s,]+/)) {
    if (!p) continue;
    const negate = p[0] === "!";
    if (negate) p = p.slice(1);
    if (!p) continue;
    let test;
    if (/[*?[]/.test(p)) {
      const re = globToRegExp(p);
      test = (name) => re.test(name);
    } else {
      const lower = p.toLowerCase();
      test = (name) => name.toLowerCase().includes(lower);
    }
    (negate ? exclude : include).push(test);
  }
  return (name) =>
    (include.length === 0 || include.some((t) => t(name))) && !exclude.some((t) => t(name));
}

/** `name` as an fnmatch glob matching exactly itself (the server's `run=`/`tag=` are globs). */
export function escapeGlob(name) {
  return String(name).replace(/[*?[]/g, (c) => `[${c}]`);
}

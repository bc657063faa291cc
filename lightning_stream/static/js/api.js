/* Data access over HTTP: URLs relative to the page (so it works behind a proxy prefix), the token,
 * JSON that tolerates Python's NaN/Infinity, and the columnar /api/series query. Only `parseJSON`
 * is pure (node-tested); the rest needs a browser's fetch and document. */

const HISTORY_TIMEOUT_MS = 120000; // a large series is megabytes of JSON on a slow link
export const HEALTH_TIMEOUT_MS = 5000;

/** The page's ?token=, sent as a header to the REST API and as ?token= to the streams. */
export function pageToken() {
  return new URLSearchParams(globalThis.location ? location.search : "").get("token");
}

export function apiUrl(path, query) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, String(item)); // repeated: tag=a&tag=b
    else if (v !== null && v !== undefined) url.searchParams.set(k, String(v));
  }
  return url;
}

export function streamUrl(path, query) {
  const url = apiUrl(path, query);
  const token = pageToken();
  if (token) url.searchParams.set("token", token); // EventSource/WebSocket cannot send headers
  return url;
}

/* Python's json module writes NaN and Infinity, which JSON.parse rejects; a diverging loss is
 * exactly what someone watches a run for, so read them instead of failing. */
export function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    const fixed = text.replace(/(-?)\b(NaN|Infinity)\b/g, (_, sign, word) =>
      word === "NaN" ? '"NaN"' : `"${sign}Infinity"`,
    );
    return JSON.parse(fixed);
  }
}

/** Counts every request the page makes (the benchmark and the lazy-loading test read it). */
export const requestStats = { total: 0, series: 0 };

async function request(path, query, timeoutMs) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const token = pageToken();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  requestStats.total += 1;
  try {
    const res = await fetch(apiUrl(path, query), { headers, signal: ctrl.signal, cache: "no-store" });
    return await answerText(res, path);
  } finally {
    clearTimeout(timer);
  }
}

/** The text of an answer, or an Error with its status and the server's message. */
export async function answerText(res, path) {
  const text = await res.text();
  if (!res.ok) {
    let message = text;
    try {
      message = parseJSON(text).error || text;
    } catch (_) {
      /* not JSON: keep the text */
    }
    const err = new Error(`HTTP ${res.status} from ${path}: ${message}`);
    err.status = res.status;
    throw err;
  }
  return text;
}

export async function getJSON(path, query, timeoutMs = HISTORY_TIMEOUT_MS) {
  return parseJSON(await request(path, query, timeoutMs));
}

export async function getText(path, query, timeoutMs = HISTORY_TIMEOUT_MS) {
  return request(path, query, timeoutMs);
}

/**
 * GET /api/series: {seq, series: [{run, tag, steps, wall_times, values, decimated}]}.
 * query: {run, tag} globs (tag may be a list: their union), and optional start_step, end_step, max_points;
 * `gate`: a promise to wait for between the answer's arrival and its parsing.
 */
export async function getSeries(query, gate = null) {
  requestStats.series += 1;
  const text = await getText("api/series", query);
  if (gate) await gate; // parsing megabytes blocks the page: not before the first chart is on screen
  return seriesBody(parseJSON(text));
}

/** The answer to the request index.html made for the top chart before the modules loaded:
 * {ok, body} or {ok: false, status, text} (counted here, when it is used). */
export async function earlySeries(answer) {
  requestStats.total += 1;
  requestStats.series += 1;
  const a = await answer;
  if (a.ok) return seriesBody(a.body);
  if (a.status >= 400) await answerText(new Response(a.text, { status: a.status }), "api/series"); // throws
  throw new Error(`api/series: ${a.text}`);
}

/** The top chart's series as the server wrote them at the end of the page (indexpage.py), parsed once,
 * or null (not there, or not JSON: the caller fetches them); `use` false: only drop them. The
 * element goes either way (its text is megabytes). */
export function embeddedSeries(use) {
  const el = document.getElementById("first-series");
  if (!el) return null;
  let body = null;
  try {
    body = use ? parseJSON(el.textContent || "null") : null;
  } catch (_) {
    body = null;
  }
  el.remove();
  return body && typeof body === "object" && Array.isArray(body.series) ? seriesBody(body) : null;
}

function seriesBody(body) {
  return { seq: body.seq, series: Array.isArray(body.series) ? body.series : [] };
}

/** The message an error shows in the banner, with the fix when there is one. */
export function explain(err) {
  if (err && (err.status === 401 || err.status === 403)) {
    return `${err.message} (open the dashboard URL with ?token=YOUR_TOKEN)`;
  }
  return err && err.message ? err.message : String(err);
}

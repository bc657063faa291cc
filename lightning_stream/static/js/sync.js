/* Staying in sync with the server: the runs list (/api/runs, again every few seconds for hparams and
 * status), the live stream with resume from the last id and backoff, /health probes that notice a
 * restarted server, and a full reload after `reset`. History itself is loaded lazily (loader.js). */

import { HEALTH_TIMEOUT_MS, explain, getJSON, parseJSON } from "./api.js";
import { ingest, requestChart, resetCharts, seriesReset } from "./loader.js";
import { charts, getRun, getSeries, hooks, noteError, state, view } from "./model.js";
import { showBanner } from "./sidebar.js";
import { num } from "./store.js";
import { openStream } from "./stream.js";

const HEALTH_EVERY_MS = 2000;
const HEALTH_FIRST_MS = 5000; // a failing stream probes at once (resume); the page load needs no probe
const RUNS_EVERY_MS = 10000;
let stream = null;
let reconnectTimer = null;
let backoffMs = 250;
let reloadPromise = null;
let lastReloadAt = -Infinity;

function setStreamState(s) {
  if (state.streamState !== s) {
    state.streamState = s;
    hooks.statusChanged();
  }
}

/** Runs and their tags from /api/runs: every (run, tag) gets its series (empty until its chart loads). */
async function loadRuns() {
  applyRuns(await getJSON("api/runs"));
}

function applyRuns(list) {
  const entries = Array.isArray(list) ? list : list.runs || [];
  entries.sort((a, b) => (a.run < b.run ? -1 : a.run > b.run ? 1 : 0)); // colours are assigned in name order
  for (const entry of entries) {
    if (!entry || typeof entry.run !== "string") continue;
    const run = getRun(entry.run);
    run.logdir = entry.logdir || null;
    run.listedStep = typeof entry.last_step === "number" ? entry.last_step : null;
    if (entry.hparams && typeof entry.hparams === "object") run.hparams = entry.hparams;
    const st = entry.status;
    if (typeof st === "string") run.state = st;
    else if (st && typeof st === "object" && typeof st.state === "string") {
      const { state: s2, run: _r, ...fields } = st;
      run.state = s2;
      run.fields = fields;
    } else if (typeof entry.state === "string") run.state = entry.state;
    run.rowDirty = true;
    for (const tag of entry.tags || []) getSeries(entry.run, tag);
  }
  hooks.statusChanged();
}

/* /health and /api/runs as the server wrote them into the page (indexpage.py), once: a reload after a
 * reset asks the routes again. null when the page came without them (a static copy, an old server). */
function takeBootData() {
  const el = document.getElementById("boot-data");
  const parsed = window.lightningStreamBoot; // index.html's inline script parsed it already
  if (!el && !parsed) return null;
  let boot = null;
  try {
    boot = parsed ? parsed.data : parseJSON(el.textContent || "null");
  } catch (_) {
    boot = null;
  }
  if (el) el.remove();
  if (parsed) parsed.data = null;
  return boot && typeof boot === "object" && boot.health && Array.isArray(boot.runs) ? boot : null;
}

/** The page's own request: time to its first byte, the round trip the embedded answers took. */
function pageRtt() {
  const nav = performance.getEntriesByType("navigation")[0];
  return nav && nav.responseStart > nav.requestStart ? nav.responseStart - nav.requestStart : 0;
}

async function start() {
  state.loading = true;
  hooks.layoutChanged();
  const boot = takeBootData();
  try {
    const t0 = performance.now();
    const health = boot ? boot.health : await getJSON("health", null, HEALTH_TIMEOUT_MS);
    // embedded: its age is at most the time since navigation (the slack of the start-time estimate)
    const rtt = boot ? t0 : performance.now() - t0;
    state.server = health;
    state.restState = "ok";
    state.restDetail = `${Math.round(boot ? pageRtt() : rtt)} ms`;
    state.dataOrigin = serverIdentity(health, rtt);
    // Resume point: the seq before /api/runs, so a series born while we load is replayed too.
    const startSeq = num(health.seq);
    if (boot) applyRuns(boot.runs);
    else await loadRuns();
    state.lastSeq = Number.isFinite(startSeq) ? startSeq : 0;
  } catch (err) {
    noteError(explain(err));
    showBanner(explain(err));
    state.loading = false;
    hooks.layoutChanged();
    setStreamState(state.streamState === "connecting" ? "offline" : state.streamState);
    streamFailed();
    return;
  }
  state.loading = false;
  state.loaded = true;
  resetCharts();
  hooks.layoutChanged();
  // Cards in the viewport load now, not a frame later when the IntersectionObserver reports them.
  for (const chart of charts.values()) {
    if (chart.card.hidden) continue;
    const r = chart.card.getBoundingClientRect();
    chart.inViewport = r.bottom > 0 && r.top < innerHeight; // loaded before the cards of the margin
    if (chart.inViewport) {
      chart.onScreen = true;
      requestChart(chart);
    }
  }
  connect();
}

function connect() {
  closeStream();
  stream = openStream(view.transport, state.lastSeq, {
    onOpen() {
      backoffMs = 250;
      setStreamState("live");
      showBanner("");
    },
    onScalars(seq, columns) {
      state.messagesReceived += 1;
      ingest(seq, columns);
      noteSeq(seq);
    },
    onStatus(seq, payload) {
      if (payload && typeof payload.run === "string") {
        const run = getRun(payload.run);
        const { run: _r, state: st, type: _t, seq: _s, ...fields } = payload;
        run.state = typeof st === "string" ? st : run.state;
        run.fields = fields;
        run.rowDirty = true;
        hooks.statusChanged();
      }
      noteSeq(seq);
    },
    onReset(seq, payload) {
      if (seriesReset(seq, payload)) {
        noteSeq(seq); // one series went back (a resumed run): it is cut, its new points follow
        return;
      }
      noteError(`reset: ${(payload && payload.reason) || "history no longer held"}`);
      reload();
    },
    onError(message) {
      noteError(`server: ${message}`);
      showBanner(`WebSocket: ${message}`);
    },
    onFail: streamFailed,
  });
}

function noteSeq(seq) {
  if (seq !== null && Number.isFinite(seq)) state.lastSeq = seq;
}

function closeStream() {
  if (reconnectTimer !== null) {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
  }
  if (stream) {
    stream.close();
    stream = null;
  }
}

function streamFailed() {
  if (stream) {
    stream.close();
    stream = null;
  }
  setStreamState(state.restState === "unreachable" || state.streamState === "offline" ? "offline" : "reconnecting");
  state.reconnects += 1;
  const delay = backoffMs;
  backoffMs = Math.min(backoffMs * 2, 5000);
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(() => {
    reconnectTimer = null;
    resume();
  }, delay);
}

/** Switch transport (the status panel's select): resume from the last id on the other one. */
export function switchTransport() {
  if (!state.loaded) return;
  backoffMs = 250;
  setStreamState("connecting");
  connect();
}

/** The server no longer holds what we missed: charts keep what they show until reloaded. Repeated
 * resets (a client too slow for the stream) reload at most every 2 s. */
function reload() {
  if (reloadPromise) return reloadPromise;
  closeStream();
  state.reloads += 1;
  state.loaded = false;
  const wait = Math.max(0, lastReloadAt + 2000 - Date.now());
  lastReloadAt = Date.now() + wait;
  reloadPromise = new Promise((resolve) => setTimeout(resolve, wait))
    .then(start)
    .finally(() => {
      reloadPromise = null;
    });
  return reloadPromise;
}

/* Reconnect after a drop. A restarted server's hub cannot replay our old id and answers `reset`;
 * probeHealth() also notices a restart from /health (pid, restarts, start time). */
async function resume() {
  await probeHealth();
  if (reloadPromise) return;
  if (state.restState === "unreachable") {
    streamFailed(); // still down: wait and retry
    return;
  }
  if (!state.loaded) {
    reload();
    return;
  }
  connect();
}

/* Which server process and incarnation answered: a restart changes the pid, the `restarts` counter
 * (same process) or the start time (a new server on the same port), estimated from uptime give or
 * take the request's round trip. */
function serverIdentity(h, rttMs) {
  const exact = typeof h.started_at === "number";
  const startedAt = exact ? h.started_at : Date.now() / 1000 - num(h.uptime_s);
  return { pid: h.pid, restarts: h.restarts, startedAt, slack: exact ? 0 : rttMs / 1000 };
}

function restartedSince(origin, now) {
  if (!origin || !now) return false;
  return now.pid !== origin.pid || now.restarts !== origin.restarts || Math.abs(now.startedAt - origin.startedAt) > 1 + origin.slack + now.slack;
}

async function probeHealth() {
  const t0 = performance.now();
  const seqBefore = state.lastSeq; // stream messages may overtake the answer: compare with before
  try {
    const health = await getJSON("health", null, HEALTH_TIMEOUT_MS);
    const rtt = performance.now() - t0;
    state.restState = "ok";
    state.restDetail = `${Math.round(rtt)} ms`;
    state.server = health;
    if (state.loaded && !reloadPromise) {
      const seq = num(health.seq);
      const now = serverIdentity(health, rtt);
      if (restartedSince(state.dataOrigin, now) || (seqBefore !== null && seq < seqBefore)) {
        noteError(`server restarted (pid ${now.pid}, restarts ${now.restarts}, seq ${seq}): reloading`);
        reload();
      }
    }
  } catch (err) {
    state.restState = err.status ? "error" : "unreachable";
    state.restDetail = err.status ? `HTTP ${err.status}` : "";
  }
  hooks.statusChanged();
}

async function healthLoop() {
  const wasDown = state.restState === "unreachable";
  await probeHealth();
  // Server came back while we wait out a backoff: reconnect now.
  if (wasDown && state.restState === "ok" && reconnectTimer !== null) {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    backoffMs = 250;
    resume();
  }
  setTimeout(healthLoop, HEALTH_EVERY_MS);
}

/* hparams and status of runs can change without a scalar: refresh the runs list now and then. */
async function runsLoop() {
  if (state.loaded && state.streamState === "live") {
    try {
      await loadRuns();
    } catch (_) {
      /* the health probe reports an unreachable server */
    }
  }
  setTimeout(runsLoop, RUNS_EVERY_MS);
}

export function startSync() {
  start(); // /health came with the page (or start asks it): no probe while the first charts load
  setTimeout(healthLoop, HEALTH_FIRST_MS);
  setTimeout(runsLoop, RUNS_EVERY_MS);
}

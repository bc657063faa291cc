/* The sidebar: the runs list (colour picker, "show only this run" on double-click, lifecycle badge,
 * hparams), the filter and display controls, and the status panel. */

import { formatClock, formatDuration, formatStep, trimZeros } from "./format.js";
import { rateBuckets, runMatchesFilter, runs, setRunColor, state, view } from "./model.js";

const RATE_WINDOW_MS = 5000;
const $ = (id) => document.getElementById(id);
let actions = null; // {runsChanged(), colorChanged(run), rowsBuilt()}

/** a: {runsChanged(), colorChanged(run), rowsBuilt()} */
export function initSidebar(a) {
  actions = a;
}

/** "lr=0.001 · batch=32": hparams as one short line (first 6 keys). */
export function hparamsText(hp) {
  if (!hp || typeof hp !== "object") return "";
  const parts = [];
  for (const [k, v] of Object.entries(hp).slice(0, 6)) {
    const text = typeof v === "number" ? trimZeros(String(Number(v.toPrecision(4)))) : typeof v === "object" ? JSON.stringify(v) : String(v);
    parts.push(`${k}=${text}`);
  }
  return parts.join(" · ");
}

const ROWS_LATEST_MS = 1000; // at load, rows wait for the first chart, at most this long
let pendingRows = []; // runs whose row is not built yet
let deferRows = true; // until the first flush: rows of the runs listed at load are built together, later
let rowsTimer = null;

/** A row for a new run. At load, 300 rows of inputs would be styled, laid out and painted in the
 * frame of the first chart: they are built once it is on screen (`flushRunRows`), or after 1 s. */
export function buildRunRow(run) {
  if (!deferRows) {
    makeRunRow(run);
    return;
  }
  pendingRows.push(run);
  if (rowsTimer === null) rowsTimer = setTimeout(flushRunRows, ROWS_LATEST_MS);
}

/** Build the rows held back at load; from now on a new run gets its row at once. */
export function flushRunRows() {
  deferRows = false;
  if (rowsTimer !== null) clearTimeout(rowsTimer);
  rowsTimer = null;
  const list = pendingRows;
  pendingRows = [];
  for (const run of list) makeRunRow(run);
  if (list.length) actions.rowsBuilt();
}

function makeRunRow(run) {
  const list = $("run-list");
  const li = document.createElement("li");
  li.className = "run";
  li.dataset.run = run.name;
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = run.checked;
  box.title = `show ${run.name}`;
  box.addEventListener("change", () => {
    run.checked = box.checked;
    actions.runsChanged();
  });
  const picker = document.createElement("input");
  picker.type = "color";
  picker.className = "swatch";
  picker.value = run.color;
  picker.title = `colour of ${run.name} (click to change)`;
  picker.addEventListener("input", () => {
    setRunColor(run, picker.value);
    view.colors[run.name] = picker.value;
    actions.colorChanged(run);
  });
  picker.addEventListener("dblclick", (e) => {
    e.preventDefault();
    delete view.colors[run.name]; // back to the colour of its name
    setRunColor(run, null);
    picker.value = run.color;
    actions.colorChanged(run);
  });
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = run.name;
  name.title = `${run.name} (double-click: show only this run)`;
  name.addEventListener("dblclick", () => showOnly(run));
  const meta = document.createElement("span");
  meta.className = "meta";
  const step = document.createElement("span");
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.state = "";
  meta.append(step, badge);
  const hp = document.createElement("div");
  hp.className = "hparams";
  hp.hidden = true;
  li.append(box, picker, name, meta, hp);
  Object.assign(run, { row: li, box, picker, stepEl: step, badge, hpEl: hp });
  // the new nodes are empty: 300 runs need no 900 text writes until something is shown
  Object.assign(run.shown, { step: "", badge: "", hp: "" });
  let before = null; // keep the list sorted by name without rebuilding it (runs mostly come sorted)
  const last = list.lastElementChild;
  if (last && last.dataset.run > run.name) {
    for (const other of list.children) {
      if (other.dataset.run > run.name) {
        before = other;
        break;
      }
    }
  }
  list.insertBefore(li, before);
  li.dataset.filtered = String(!runMatchesFilter(run.name));
  $("run-count").textContent = String(runs.size);
}

/** Double-click a run: show only it; double-click the only shown run: show all again. */
export function showOnly(run) {
  const alone = run.checked && [...runs.values()].every((r) => r === run || !r.checked);
  for (const r of runs.values()) {
    r.checked = alone || r === run;
    if (r.box) r.box.checked = r.checked;
  }
  actions.runsChanged();
}

export function lifecycle(run) {
  switch (run.state) {
    case "started":
    case "epoch":
    case "running":
      return "running";
    case "finished":
      return "finished";
    case "failed":
      return "failed";
    default:
      return "";
  }
}

export function setText(node, text, cacheKey, owner) {
  if (owner.shown[cacheKey] !== text) {
    owner.shown[cacheKey] = text;
    node.textContent = text;
  }
}

function refreshRunRow(run) {
  setText(run.stepEl, run.lastStep === null ? "" : `step ${formatStep(run.lastStep)}`, "step", run);
  const life = lifecycle(run);
  let label = life;
  if (run.state === "epoch" && run.fields.epoch !== undefined) label = `epoch ${run.fields.epoch}`;
  setText(run.badge, label, "badge", run);
  if (run.badge.dataset.state !== life) run.badge.dataset.state = life;
  const title = run.fields.error || run.fields.message || run.logdir || run.name;
  if (run.row.title !== title) run.row.title = title;
  const hp = hparamsText(run.hparams);
  setText(run.hpEl, hp, "hp", run);
  if (run.hpEl.hidden !== !hp) run.hpEl.hidden = !hp;
  if (hp) run.hpEl.title = JSON.stringify(run.hparams, null, 1);
  if (run.picker.value !== run.color) run.picker.value = run.color;
}

export function refreshRunFilter() {
  for (const run of runs.values()) if (run.row) run.row.dataset.filtered = String(!runMatchesFilter(run.name));
}

export function pointsPerSecond(now) {
  while (rateBuckets.length && rateBuckets[0][0] < now - RATE_WINDOW_MS) rateBuckets.shift();
  let total = 0;
  for (const [, n] of rateBuckets) total += n;
  const span = Math.min(RATE_WINDOW_MS, Math.max(1000, now - (rateBuckets.length ? rateBuckets[0][0] : now)));
  return total / (span / 1000);
}

const statusShown = { shown: {} };

function clientsText(c) {
  if (!c || typeof c !== "object") return "";
  const total = (c.sse || 0) + (c.ws || 0);
  return `${total} client${total === 1 ? "" : "s"}`;
}

export function renderStatus() {
  const now = Date.now();
  const ss = state.streamState;
  const transportName = view.transport === "ws" ? "WebSocket" : "SSE";
  const streamText = { connecting: "connecting", live: "live", reconnecting: `reconnecting (${state.reconnects})`, offline: "offline" }[ss];
  const el = (id) => $(id);
  setText(el("stream-state"), streamText, "stream", statusShown);
  if (el("stream-state").dataset.state !== ss) el("stream-state").dataset.state = ss;
  const pill = ss === "live" ? "live" : ss === "connecting" ? "connecting" : state.restState === "ok" ? "reconnecting" : "offline";
  if (el("conn-pill").dataset.state !== pill) el("conn-pill").dataset.state = pill;
  setText(el("conn-text"), pill === "live" ? `live · ${transportName}` : pill, "pill", statusShown);
  const rest = state.restState;
  const restText = { unknown: "checking", ok: `ok · ${state.restDetail}`, unreachable: "unreachable", error: `error · ${state.restDetail}` }[rest];
  setText(el("rest-state"), restText, "rest", statusShown);
  if (el("rest-state").dataset.state !== rest) el("rest-state").dataset.state = rest;
  const rate = pointsPerSecond(now);
  setText(el("rate"), rate >= 100 ? String(Math.round(rate)) : trimZeros(rate.toFixed(1)), "rate", statusShown);
  const lu = state.lastUpdate === null ? "never" : `${formatClock(state.lastUpdate)} (${formatDuration((now - state.lastUpdate) / 1000)} ago)`;
  setText(el("last-update"), lu, "lu", statusShown);
  setText(el("last-seq"), state.lastSeq === null ? "—" : String(state.lastSeq), "seq", statusShown);
  const h = state.server;
  const info = h ? `v${h.version} · pid ${h.pid} · up ${formatDuration(h.uptime_s)} · ${clientsText(h.clients)}` : "—";
  setText(el("server-info"), info, "server", statusShown);
  for (const run of runs.values()) {
    if (run.rowDirty && run.row) {
      run.rowDirty = false;
      refreshRunRow(run);
    }
  }
}

export function showBanner(text) {
  const banner = $("banner");
  banner.hidden = !text;
  banner.textContent = text || "";
  banner.title = text || "";
}

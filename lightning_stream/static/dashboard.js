/* lightning-stream dashboard: history over REST, then live points over SSE (or WebSocket).
 *
 * Plain JavaScript with no dependencies and no build step. Performance rules, because a run can
 * hold 100 tags x 100,000 points:
 *   - each series keeps its points in typed arrays that grow by doubling (no object per point);
 *   - a chart is redrawn only when its data or the view changed, at most once per animation
 *     frame, and only while it is on screen;
 *   - lines are drawn decimated per pixel column (first, min, max, last), so a redraw costs
 *     O(points) arithmetic but O(width) canvas work;
 *   - the DOM is built once per run and per tag; updates only change text that changed.
 * Tests read `window.lightningStream` (read-only snapshots) instead of poking at internals.
 */
(() => {
  "use strict";

  const PAGE = new URLSearchParams(location.search);
  const TOKEN = PAGE.get("token");
  const HEALTH_EVERY_MS = 2000;
  const HEALTH_TIMEOUT_MS = 5000;
  const HISTORY_TIMEOUT_MS = 120000; // a 100,000-point series is megabytes of JSON
  const HISTORY_CONCURRENCY = 6;
  const RATE_WINDOW_MS = 5000;
  const PALETTE = [
    "#3b9eff", "#ff8c2b", "#2fbf71", "#e5484d", "#a875ff", "#12b5b0",
    "#e0a100", "#ff5fa2", "#8fb339", "#7c8cff", "#c0793f", "#5fc6e8",
  ];
  const STORE_KEY = "lightning-stream.view";
  const BLOCK_SHIFT = 4; // min/max summaries over blocks of 16 points
  const BLOCK = 1 << BLOCK_SHIFT;
  const FRAME_BUDGET_MS = 12; // past this, the other dirty charts wait for the next frame
  const DATA_REDRAW_MS = 100; // new points redraw a chart at most 10 times a second

  // ---------------------------------------------------------------- state

  const state = {
    transport: "sse",
    streamState: "connecting", // connecting | live | reconnecting | offline
    restState: "unknown", // unknown | ok | unreachable | error
    restDetail: "",
    lastSeq: null, // seq of the last stream message (id), resume point
    loaded: false,
    loading: false,
    reloads: 0,
    reconnects: 0,
    draws: 0,
    pointsReceived: 0,
    messagesReceived: 0,
    lastUpdate: null, // Date.now() of the last data point
    server: null, // last /health answer
    dataOrigin: null, // identity of the server the loaded history came from
    errors: [],
    smoothing: 0.6,
    logScale: false,
    runFilter: "",
    tagFilter: "",
  };
  const runs = new Map(); // name -> Run
  const charts = new Map(); // tag -> Chart
  const groups = new Map(); // tag prefix -> Group (header + charts)
  const series = new Map(); // run \0 tag -> Series
  const rateBuckets = []; // [timeMs, points]

  const $ = (id) => document.getElementById(id);
  const el = {
    pill: $("conn-pill"),
    pillText: $("conn-text"),
    banner: $("banner"),
    theme: $("theme-toggle"),
    runFilter: $("run-filter"),
    tagFilter: $("tag-filter"),
    smoothing: $("smoothing"),
    smoothingValue: $("smoothing-value"),
    logScale: $("log-scale"),
    runList: $("run-list"),
    runCount: $("run-count"),
    runsAll: $("runs-all"),
    runsNone: $("runs-none"),
    transport: $("transport"),
    streamState: $("stream-state"),
    restState: $("rest-state"),
    rate: $("rate"),
    lastUpdate: $("last-update"),
    lastSeq: $("last-seq"),
    serverInfo: $("server-info"),
    empty: $("empty"),
    charts: $("charts"),
    tooltip: $("tooltip"),
  };

  function noteError(message) {
    state.errors.push(String(message));
    if (state.errors.length > 50) state.errors.shift();
  }

  // ---------------------------------------------------------------- URLs and JSON

  function apiUrl(path, query) {
    const url = new URL(path, document.baseURI);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== null && v !== undefined) url.searchParams.set(k, String(v));
    }
    return url;
  }

  function streamUrl(path, query) {
    const url = apiUrl(path, query);
    if (TOKEN) url.searchParams.set("token", TOKEN); // EventSource/WebSocket cannot send headers
    return url;
  }

  /* Python's json module writes NaN and Infinity, which JSON.parse rejects; a diverging loss is
   * exactly what someone watches a run for, so read them instead of failing. */
  function parseJSON(text) {
    try {
      return JSON.parse(text);
    } catch (err) {
      const fixed = text.replace(/(-?)\b(NaN|Infinity)\b/g, (_, sign, word) =>
        word === "NaN" ? '"NaN"' : `"${sign}Infinity"`,
      );
      return JSON.parse(fixed);
    }
  }

  function num(v) {
    if (typeof v === "number") return v;
    if (v === null || v === undefined) return NaN;
    return Number(v); // "NaN", "Infinity", "-Infinity"
  }

  async function getJSON(path, query, timeoutMs = HISTORY_TIMEOUT_MS) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    try {
      const res = await fetch(apiUrl(path, query), { headers, signal: ctrl.signal, cache: "no-store" });
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
      return parseJSON(text);
    } finally {
      clearTimeout(timer);
    }
  }

  function showBanner(text) {
    if (!text) {
      el.banner.hidden = true;
      el.banner.textContent = "";
      return;
    }
    el.banner.hidden = false;
    el.banner.textContent = text;
    el.banner.title = text;
  }

  function explain(err) {
    if (err && (err.status === 401 || err.status === 403)) {
      return `${err.message} (open the dashboard URL with ?token=YOUR_TOKEN)`;
    }
    return err && err.message ? err.message : String(err);
  }

  // ---------------------------------------------------------------- filters

  function globToRegExp(glob) {
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

  /* Space/comma separated patterns; a pattern with * ? [ is a glob on the whole name, a plain word
   * matches anywhere; a leading ! excludes. Empty text matches everything. */
  function makeMatcher(text) {
    const include = [];
    const exclude = [];
    for (let p of text.split(/[\s,]+/)) {
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

  let runMatches = () => true;
  let tagMatches = () => true;

  function runVisible(run) {
    return run.checked && runMatches(run.name);
  }

  function applyFilters() {
    runMatches = makeMatcher(state.runFilter);
    tagMatches = makeMatcher(state.tagFilter);
    for (const run of runs.values()) {
      run.row.dataset.filtered = String(!runMatches(run.name));
    }
    for (const chart of charts.values()) {
      chart.dirty = true;
      chart.urgent = true;
    }
    refreshLayout();
    scheduleFrame();
  }

  /* Show a chart when its tag passes the filter, a visible run has points for it and its group
   * is open; show a group's header when any of its charts would be shown. */
  function refreshLayout() {
    for (const group of groups.values()) {
      let matching = 0;
      for (const chart of group.charts) {
        const wanted = tagMatches(chart.tag) && hasVisibleData(chart);
        if (wanted) matching += 1;
        const shown = wanted && !group.collapsed;
        if (chart.card.hidden === shown) chart.card.hidden = !shown;
      }
      const headerShown = matching > 0 && group.name !== "";
      if (group.header.hidden === headerShown) group.header.hidden = !headerShown;
      const label = `${matching} chart${matching === 1 ? "" : "s"}`;
      if (group.countEl.textContent !== label) group.countEl.textContent = label;
    }
    updateEmpty();
  }

  function hasVisibleData(chart) {
    for (const s of chart.series) if (s.n > 0 && runVisible(s.run)) return true;
    return false;
  }

  function updateEmpty() {
    let text = "";
    if (!state.loaded) text = state.loading ? "Loading history…" : "Connecting…";
    else if (charts.size === 0) text = "No scalars yet: waiting for the first point.";
    else {
      let any = false;
      for (const c of charts.values()) if (!c.card.hidden) any = true;
      for (const g of groups.values()) if (!g.header.hidden) any = true;
      if (!any) text = "No chart matches the run and tag filters.";
    }
    el.empty.textContent = text;
    el.empty.hidden = !text;
  }

  // ---------------------------------------------------------------- runs, series, charts

  function colorFor(index) {
    if (index < PALETTE.length) return PALETTE[index];
    const hue = (index * 137.508) % 360; // golden angle: far from the previous colours
    return `hsl(${hue.toFixed(0)}, 70%, 58%)`;
  }

  function getRun(name) {
    let run = runs.get(name);
    if (run) return run;
    run = {
      name,
      color: colorFor(runs.size),
      logdir: null,
      state: null, // started | epoch | finished | failed (from event: status)
      fields: {},
      checked: true,
      lastStep: null,
      shown: {},
      row: null,
    };
    runs.set(name, run);
    buildRunRow(run);
    return run;
  }

  function buildRunRow(run) {
    const li = document.createElement("li");
    li.className = "run";
    li.dataset.run = run.name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.title = `show ${run.name}`;
    box.addEventListener("change", () => {
      run.checked = box.checked;
      applyFilters();
      saveView();
    });
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = run.color;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = run.name;
    name.title = run.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    const step = document.createElement("span");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.state = "";
    meta.append(step, badge);
    li.append(box, sw, name, meta);
    run.row = li;
    run.box = box;
    run.stepEl = step;
    run.badge = badge;
    // keep the list sorted by name without rebuilding it
    let before = null;
    for (const other of el.runList.children) {
      if (other.dataset.run > run.name) {
        before = other;
        break;
      }
    }
    el.runList.insertBefore(li, before);
    li.dataset.filtered = String(!runMatches(run.name));
    el.runCount.textContent = String(runs.size);
  }

  function lifecycle(run) {
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

  function setText(node, text, cacheKey, owner) {
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
  }

  /* TensorBoard groups charts by the tag's prefix before the first "/"; tags without one
   * ("epoch", "lr-Adam") share a group without a header, at the top. */
  function groupName(tag) {
    const slash = tag.indexOf("/");
    return slash > 0 ? tag.slice(0, slash) : "";
  }

  function insertSorted(node, key) {
    node.dataset.key = key;
    let before = null;
    for (const other of el.charts.children) {
      if (other.dataset.key > key) {
        before = other;
        break;
      }
    }
    el.charts.insertBefore(node, before);
  }

  function getGroup(name) {
    let group = groups.get(name);
    if (group) return group;
    const header = document.createElement("button");
    header.type = "button";
    header.className = "group";
    header.dataset.group = name;
    header.setAttribute("aria-expanded", "true");
    const caret = document.createElement("span");
    caret.className = "caret";
    caret.textContent = "▾";
    const title = document.createElement("span");
    title.className = "group-name";
    title.textContent = name;
    const count = document.createElement("span");
    count.className = "group-count";
    header.append(caret, title, count);
    header.hidden = true;
    group = { name, header, countEl: count, charts: new Set(), collapsed: false };
    header.addEventListener("click", () => {
      group.collapsed = !group.collapsed;
      header.setAttribute("aria-expanded", String(!group.collapsed));
      header.classList.toggle("collapsed", group.collapsed);
      for (const chart of group.charts) {
        chart.dirty = true;
        chart.urgent = true;
      }
      refreshLayout();
      scheduleFrame();
    });
    groups.set(name, group);
    insertSorted(header, `${name}\u0000`);
    return group;
  }

  function getChart(tag) {
    let chart = charts.get(tag);
    if (chart) return chart;
    const group = getGroup(groupName(tag));
    const card = document.createElement("article");
    card.className = "chart";
    card.dataset.tag = tag;
    const head = document.createElement("header");
    const h = document.createElement("h3");
    h.textContent = tag;
    h.title = tag;
    const meta = document.createElement("span");
    meta.className = "meta";
    head.append(h, meta);
    const plot = document.createElement("div");
    plot.className = "plot";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `line chart of ${tag}: value by step, one line per run`);
    const overlay = document.createElement("canvas");
    overlay.className = "overlay";
    overlay.setAttribute("aria-hidden", "true");
    plot.append(canvas, overlay);
    card.append(head, plot);
    chart = {
      tag,
      card,
      meta,
      plot,
      canvas,
      overlay,
      ctx: canvas.getContext("2d"),
      octx: overlay.getContext("2d"),
      series: [],
      width: 0,
      height: 0,
      dpr: 1,
      dirty: true,
      onScreen: false,
      urgent: false, // the view changed: redraw at the next frame, whatever the data rate
      drawnAt: -Infinity,
      layout: null, // scales of the last draw, for hover
      hover: null, // {x, y} CSS px inside the plot
      shown: {},
      draws: 0,
    };
    charts.set(tag, chart);
    group.charts.add(chart);
    card.hidden = true; // shown once it has visible data
    insertSorted(card, `${group.name}\u0000${tag}`);
    resizeObserver.observe(plot);
    visibilityObserver.observe(card);
    overlay.addEventListener("pointermove", (e) => {
      const r = overlay.getBoundingClientRect();
      chart.hover = { x: e.clientX - r.left, y: e.clientY - r.top, cx: e.clientX, cy: e.clientY };
      drawHover(chart);
    });
    overlay.addEventListener("pointerleave", () => {
      chart.hover = null;
      drawHover(chart);
    });
    return chart;
  }

  function seriesKey(run, tag) {
    return `${run}\u0000${tag}`;
  }

  function getSeries(runName, tag) {
    const key = seriesKey(runName, tag);
    let s = series.get(key);
    if (s) return s;
    const run = getRun(runName);
    const chart = getChart(tag);
    s = {
      run,
      tag,
      chart,
      n: 0,
      steps: new Float64Array(64), // int64 steps are exact up to 2^53
      values: new Float64Array(64),
      walls: new Float64Array(64),
      loadedSeq: -Infinity, // stream messages with seq <= this are already in the history
      smooth: null, // Float32Array, computed lazily for the current weight
      smoothN: 0,
      smoothW: -1,
      smoothLast: 0,
      smoothCount: 0,
      min: Infinity,
      max: -Infinity,
      minPos: Infinity, // smallest value > 0, for the log scale
      rangeStale: false,
      rawBlocks: newBlocks(), // min/max per 16 values: a redraw skips blocks within one pixel column
      smoothBlocks: newBlocks(),
    };
    series.set(key, s);
    chart.series.push(s);
    chart.series.sort((a, b) => (a.run.name < b.run.name ? -1 : a.run.name > b.run.name ? 1 : 0));
    return s;
  }

  function newBlocks() {
    return { min: new Float64Array(16), max: new Float64Array(16), done: 0 };
  }

  /* Summarise every complete block of 16 values (incremental: done blocks are kept). A block
   * holding a non-finite value gets NaN, so drawing falls back to its points. */
  function blocksFor(blk, ys, n) {
    const complete = n >> BLOCK_SHIFT;
    if (blk.min.length < complete) {
      let cap = blk.min.length;
      while (cap < complete) cap *= 2;
      const min = new Float64Array(cap);
      const max = new Float64Array(cap);
      min.set(blk.min.subarray(0, blk.done));
      max.set(blk.max.subarray(0, blk.done));
      blk.min = min;
      blk.max = max;
    }
    for (let b = blk.done; b < complete; b++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = b << BLOCK_SHIFT, end = i + BLOCK; i < end; i++) {
        const v = ys[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (!Number.isFinite(v)) {
          lo = NaN;
          hi = NaN;
          break;
        }
      }
      blk.min[b] = lo;
      blk.max[b] = hi;
    }
    blk.done = complete;
    return blk;
  }

  function truncateBlocks(s) {
    const complete = s.n >> BLOCK_SHIFT;
    if (s.rawBlocks.done > complete) s.rawBlocks.done = complete;
    if (s.smoothBlocks.done > complete) s.smoothBlocks.done = complete;
  }

  function grow(s, need) {
    if (need <= s.steps.length) return;
    let cap = s.steps.length;
    while (cap < need) cap *= 2;
    for (const name of ["steps", "values", "walls"]) {
      const next = new Float64Array(cap);
      next.set(s[name].subarray(0, s.n));
      s[name] = next;
    }
  }

  function lowerBound(arr, n, x) {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (arr[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /* Append one point. A step at or below the last one drops the held points with step >= it,
   * like TensorBoard's purge_orphaned_data after a restart from a checkpoint (and like the hub). */
  function appendPoint(s, step, wall, value) {
    if (s.n > 0 && step <= s.steps[s.n - 1]) {
      s.n = lowerBound(s.steps, s.n, step);
      s.rangeStale = true;
      truncateBlocks(s);
      if (s.smoothN > s.n) s.smoothN = -1; // recompute smoothing from scratch
    }
    grow(s, s.n + 1);
    s.steps[s.n] = step;
    s.walls[s.n] = wall;
    s.values[s.n] = value;
    s.n += 1;
    if (Number.isFinite(value)) {
      if (value < s.min) s.min = value;
      if (value > s.max) s.max = value;
      if (value > 0 && value < s.minPos) s.minPos = value;
    }
  }

  function refreshRange(s) {
    if (!s.rangeStale) return;
    s.rangeStale = false;
    s.min = Infinity;
    s.max = -Infinity;
    s.minPos = Infinity;
    for (let i = 0; i < s.n; i++) {
      const v = s.values[i];
      if (!Number.isFinite(v)) continue;
      if (v < s.min) s.min = v;
      if (v > s.max) s.max = v;
      if (v > 0 && v < s.minPos) s.minPos = v;
    }
  }

  function clearSeries(s) {
    s.n = 0;
    truncateBlocks(s);
    s.smoothN = -1;
    s.rangeStale = true;
    s.loadedSeq = -Infinity;
  }

  function touched(s) {
    const run = s.run;
    const last = s.steps[s.n - 1];
    if (s.n > 0 && (run.lastStep === null || last > run.lastStep)) run.lastStep = last;
    run.rowDirty = true;
    const chart = s.chart;
    chart.dirty = true;
    if (chart.card.hidden && s.n > 0 && runVisible(run) && tagMatches(chart.tag)) {
      state.layoutDirty = true; // a chart (or its group) appears: refreshLayout() next frame
    }
  }

  /* TensorBoard's smoothing: an exponential moving average, debiased so that the first points
   * are not pulled towards zero (vz_line_chart2 `resmoothDataset`). Incremental: new points
   * continue from the saved accumulator. Non-finite values pass through unsmoothed. */
  function smoothed(s, w) {
    if (s.smoothW !== w || s.smoothN < 0 || !s.smooth || s.smooth.length < s.n) {
      if (!s.smooth || s.smooth.length < s.n) {
        const next = new Float32Array(s.values.length);
        if (s.smooth && s.smoothN > 0) next.set(s.smooth.subarray(0, s.smoothN));
        s.smooth = next;
      }
      if (s.smoothW !== w || s.smoothN < 0) {
        s.smoothN = 0;
        s.smoothBlocks.done = 0;
        s.smoothLast = 0;
        s.smoothCount = 0;
        s.smoothW = w;
      }
    }
    let last = s.smoothLast;
    let count = s.smoothCount;
    for (let i = s.smoothN; i < s.n; i++) {
      const v = s.values[i];
      if (!Number.isFinite(v)) {
        s.smooth[i] = v;
        continue;
      }
      last = last * w + (1 - w) * v;
      count += 1;
      s.smooth[i] = w === 1 ? last : last / (1 - Math.pow(w, count));
    }
    s.smoothLast = last;
    s.smoothCount = count;
    s.smoothN = s.n;
    return s.smooth;
  }

  // ---------------------------------------------------------------- ingest

  function ingestPoints(seq, points) {
    if (!Array.isArray(points)) return;
    const now = Date.now();
    let count = 0;
    let last = null;
    const changed = new Set();
    for (const p of points) {
      if (!p || typeof p.run !== "string" || typeof p.tag !== "string") continue;
      const s = last && last.run.name === p.run && last.tag === p.tag ? last : getSeries(p.run, p.tag);
      last = s;
      if (seq !== null && seq <= s.loadedSeq) continue; // already in the loaded history
      appendPoint(s, num(p.step), num(p.wall_time), num(p.value));
      changed.add(s);
      count += 1;
    }
    if (count === 0) return;
    for (const s of changed) touched(s);
    state.pointsReceived += count;
    state.lastUpdate = now;
    rateBuckets.push([now, count]);
    scheduleFrame();
  }

  function ingestStatus(payload) {
    if (!payload || typeof payload.run !== "string") return;
    const run = getRun(payload.run);
    const { run: _r, state: st, ...fields } = payload;
    run.state = typeof st === "string" ? st : run.state;
    run.fields = fields;
    run.rowDirty = true;
    scheduleStatus();
  }

  function noteSeq(seq) {
    if (seq !== null && Number.isFinite(seq)) state.lastSeq = seq;
  }

  // ---------------------------------------------------------------- history (REST)

  async function loadHistory() {
    state.loading = true;
    updateEmpty();
    const t0 = performance.now();
    const health = await getJSON("health", null, HEALTH_TIMEOUT_MS);
    state.server = health;
    state.dataOrigin = serverIdentity(health, performance.now() - t0);
    // Resume point: the seq before /api/runs, so a series born while we load is replayed too.
    // Series already loaded skip what their own answer covered (`loadedSeq`).
    const startSeq = num(health.seq);
    const list = await getJSON("api/runs");
    const entries = Array.isArray(list) ? list : list.runs || [];
    const listSeq = Array.isArray(list) ? null : num(list.seq);
    entries.sort((a, b) => (a.run < b.run ? -1 : a.run > b.run ? 1 : 0)); // stable colours
    const jobs = [];
    for (const entry of entries) {
      const run = getRun(entry.run);
      run.logdir = entry.logdir || null;
      const st = entry.status;
      if (typeof st === "string") run.state = st;
      else if (st && typeof st === "object" && typeof st.state === "string") {
        const { state: s2, run: _r, ...fields } = st;
        run.state = s2;
        run.fields = fields;
      } else if (typeof entry.state === "string") run.state = entry.state;
      run.rowDirty = true;
      for (const tag of entry.tags || []) jobs.push([entry.run, tag]);
    }
    // Tag order is page order: the charts at the top fill in first.
    jobs.sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let minSeq = null;
    let next = 0;
    const refreshed = new Set();
    const worker = async () => {
      while (next < jobs.length) {
        const [runName, tag] = jobs[next++];
        let data;
        try {
          data = await getJSON("api/scalars", { run: runName, tag });
        } catch (err) {
          if (err.status === 404) continue; // removed meanwhile
          throw err;
        }
        const s = getSeries(runName, tag);
        refreshed.add(s);
        clearSeries(s);
        const pts = data.points || [];
        grow(s, pts.length);
        for (const p of pts) appendPoint(s, num(p[0]), num(p[1]), num(p[2]));
        const seq = num(data.seq);
        if (Number.isFinite(seq)) {
          s.loadedSeq = seq;
          minSeq = minSeq === null ? seq : Math.min(minSeq, seq);
        }
        if (s.n > 0) {
          // "last update" before any live point: when the newest loaded point was written
          const newest = s.walls[s.n - 1] * 1000;
          if (Number.isFinite(newest) && (state.lastUpdate === null || newest > state.lastUpdate)) {
            state.lastUpdate = Math.min(newest, Date.now());
          }
        }
        touched(s);
        scheduleFrame();
      }
    };
    const workers = [];
    for (let i = 0; i < Math.min(HISTORY_CONCURRENCY, jobs.length); i++) workers.push(worker());
    await Promise.all(workers);
    for (const s of series.values()) {
      if (!refreshed.has(s) && s.n > 0) {
        clearSeries(s); // the server no longer holds it (e.g. published before a restart)
        touched(s);
      }
    }
    state.loading = false;
    state.loaded = true;
    if (Number.isFinite(startSeq)) state.lastSeq = startSeq;
    else if (minSeq !== null) state.lastSeq = minSeq;
    else state.lastSeq = Number.isFinite(listSeq) ? listSeq : 0;
    applyFilters();
    scheduleStatus();
  }

  // ---------------------------------------------------------------- streams

  let stream = null; // {close()}
  let reconnectTimer = null;
  let backoffMs = 250;
  let generation = 0; // bumps on every (re)start: late callbacks of old streams are ignored

  function setStreamState(s) {
    if (state.streamState !== s) {
      state.streamState = s;
      scheduleStatus();
    }
  }

  function closeStream() {
    generation += 1;
    if (reconnectTimer !== null) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
    if (stream) {
      stream.close();
      stream = null;
    }
  }

  function streamFailed(gen) {
    if (gen !== generation) return;
    if (stream) {
      stream.close();
      stream = null;
    }
    setStreamState(state.restState === "unreachable" || state.streamState === "offline" ? "offline" : "reconnecting");
    state.reconnects += 1;
    const delay = backoffMs;
    backoffMs = Math.min(backoffMs * 2, 5000);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      if (gen === generation) resume();
    }, delay);
  }

  function streamOpened(gen) {
    if (gen !== generation) return;
    backoffMs = 250;
    setStreamState("live");
    showBanner("");
  }

  function openStream() {
    closeStream();
    const gen = generation;
    stream = state.transport === "ws" ? openWebSocket(gen) : openEventSource(gen);
  }

  function openEventSource(gen) {
    const es = new EventSource(streamUrl("stream", { last_event_id: state.lastSeq }));
    const seqOf = (e) => (e.lastEventId === "" ? null : Number(e.lastEventId));
    es.onopen = () => streamOpened(gen);
    es.addEventListener("scalars", (e) => {
      if (gen !== generation) return;
      const seq = seqOf(e);
      state.messagesReceived += 1;
      ingestPoints(seq, parseJSON(e.data).points);
      noteSeq(seq);
    });
    es.addEventListener("status", (e) => {
      if (gen !== generation) return;
      ingestStatus(parseJSON(e.data));
      noteSeq(seqOf(e));
    });
    es.addEventListener("reset", (e) => {
      if (gen !== generation) return;
      onReset(parseJSON(e.data));
    });
    // The browser would retry by itself, but with the stale ?last_event_id= of the first URL;
    // we reconnect ourselves from the last id we saw, with backoff.
    es.onerror = () => streamFailed(gen);
    return { close: () => es.close() };
  }

  function openWebSocket(gen) {
    const url = streamUrl("ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    ws.onopen = () => {
      const sub = { op: "subscribe", run: "*", tag: "*" };
      if (state.lastSeq !== null) sub.since = state.lastSeq;
      ws.send(JSON.stringify(sub));
      streamOpened(gen);
    };
    ws.onmessage = (e) => {
      if (gen !== generation) return;
      const msg = parseJSON(e.data);
      const seq = msg.seq === undefined ? null : num(msg.seq);
      if (msg.type === "scalars") {
        state.messagesReceived += 1;
        ingestPoints(seq, msg.points);
        noteSeq(seq);
      } else if (msg.type === "status") {
        ingestStatus(msg);
        noteSeq(seq);
      } else if (msg.type === "reset") {
        onReset(msg);
      } else if (msg.type === "error") {
        noteError(`server: ${msg.message}`);
        showBanner(`WebSocket: ${msg.message}`);
      }
    };
    ws.onclose = () => streamFailed(gen);
    return {
      close: () => {
        ws.onclose = null;
        ws.close();
      },
    };
  }

  let reloadPromise = null;

  /* The server no longer holds what we missed: drop everything and load the history again. */
  function onReset(payload) {
    noteError(`reset: ${(payload && payload.reason) || "history no longer held"}`);
    reload();
  }

  let lastReloadAt = -Infinity;

  /* Charts keep what they show until the new history replaces it, series by series; repeated
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

  /* Reconnect after a drop. A restarted server's hub cannot replay our old id and answers
   * `reset`; probeHealth() also notices a restart from /health (pid, restarts, start time). */
  async function resume() {
    await probeHealth();
    if (reloadPromise) return;
    if (state.restState === "unreachable") {
      streamFailed(generation); // still down: wait and retry
      return;
    }
    if (!state.loaded) {
      reload();
      return;
    }
    openStream();
  }

  async function start() {
    const gen = generation;
    try {
      await loadHistory();
    } catch (err) {
      noteError(explain(err));
      showBanner(explain(err));
      state.loading = false;
      updateEmpty();
      setStreamState(state.streamState === "connecting" ? "offline" : state.streamState);
      streamFailed(gen);
      return;
    }
    openStream();
  }

  // ---------------------------------------------------------------- health

  /* Which server process and incarnation answered: a restart changes the pid, the `restarts`
   * counter (same process) or the start time (a new server on the same port). The start time
   * is estimated from uptime, give or take the request's round trip. */
  function serverIdentity(h, rttMs) {
    const exact = typeof h.started_at === "number";
    const startedAt = exact ? h.started_at : Date.now() / 1000 - num(h.uptime_s);
    return { pid: h.pid, restarts: h.restarts, startedAt, slack: exact ? 0 : rttMs / 1000 };
  }

  function restartedSince(origin, now) {
    if (!origin || !now) return false;
    return (
      now.pid !== origin.pid ||
      now.restarts !== origin.restarts ||
      Math.abs(now.startedAt - origin.startedAt) > 1 + origin.slack + now.slack
    );
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
          noteError(`server restarted (pid ${now.pid}, restarts ${now.restarts}, seq ${seq}): reloading history`);
          reload();
        }
      }
    } catch (err) {
      if (err.status) {
        state.restState = "error";
        state.restDetail = `HTTP ${err.status}`;
      } else {
        state.restState = "unreachable";
        state.restDetail = "";
      }
    }
    scheduleStatus();
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

  // ---------------------------------------------------------------- formatting

  function trimZeros(s) {
    return s.includes("e") || !s.includes(".") ? s : s.replace(/\.?0+$/, "");
  }

  function formatValue(v) {
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-4)) return v.toExponential(3).replace("e+", "e");
    return trimZeros(v.toPrecision(5));
  }

  function formatStep(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return `${trimZeros((v / 1e9).toFixed(2))}G`;
    if (a >= 1e6) return `${trimZeros((v / 1e6).toFixed(2))}M`;
    if (a >= 1e4) return `${trimZeros((v / 1e3).toFixed(1))}k`;
    return String(Math.round(v * 1000) / 1000);
  }

  function formatTick(v, step) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) {
      const digits = Math.max(0, Math.min(3, Math.ceil(Math.log10(a / step) - 1e-9)));
      return v.toExponential(digits).replace("e+", "e");
    }
    const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
    return v.toFixed(decimals);
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds)) return "";
    const s = Math.max(0, seconds);
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function formatClock(ms) {
    const d = new Date(ms);
    const pad = (x) => String(x).padStart(2, "0");
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  // ---------------------------------------------------------------- drawing

  let theme = null;

  function readTheme() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    theme = { fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), axis: v("--axis"), card: v("--card") };
  }

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }

  function linearTicks(lo, hi, count) {
    const step = niceStep(hi - lo, count);
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return { ticks, step };
  }

  function logTicks(lo, hi, count) {
    // lo, hi are log10 values
    const ticks = [];
    const d0 = Math.floor(lo);
    const d1 = Math.ceil(hi);
    const every = Math.max(1, Math.ceil((d1 - d0) / count));
    const mults = d1 - d0 <= 2 ? [1, 2, 5] : [1];
    for (let d = d0; d <= d1; d += every) {
      for (const m of mults) {
        const lv = d + Math.log10(m);
        if (lv >= lo - 1e-9 && lv <= hi + 1e-9) ticks.push(m * Math.pow(10, d));
      }
    }
    return ticks;
  }

  function formatLogTick(v) {
    const e = Math.floor(Math.log10(v) + 1e-9);
    if (e >= -3 && e <= 4) return trimZeros(v.toPrecision(3));
    const m = Math.round(v / Math.pow(10, e));
    return `${m === 1 ? "" : `${m}×`}1e${e}`;
  }

  function resizeChart(chart, width, height) {
    const dpr = window.devicePixelRatio || 1;
    if (chart.width === width && chart.height === height && chart.dpr === dpr) return;
    chart.width = width;
    chart.height = height;
    chart.dpr = dpr;
    for (const c of [chart.canvas, chart.overlay]) {
      c.width = Math.max(1, Math.round(width * dpr));
      c.height = Math.max(1, Math.round(height * dpr));
    }
    chart.dirty = true;
    chart.urgent = true; // resizing cleared the canvas
    scheduleFrame();
  }

  /* Stroke steps/ys as a polyline decimated per device-pixel column: for every column keep the
   * first, min, max and last y, so spikes survive and the path has at most ~4 vertices per column.
   * A block of 16 points that falls inside one column is taken whole from its min/max summary. */
  function strokeDecimated(ctx, steps, ys, n, L, blk) {
    const { x0, sx, y0, sy, log, left, top, dpr } = L;
    const usable = blk.done << BLOCK_SHIFT;
    const scaleX = sx * dpr;
    const offX = left * dpr - x0 * scaleX;
    let col = NaN;
    let first = 0;
    let lo = 0;
    let hi = 0;
    let lastY = 0;
    let pen = false;
    let open = false;
    ctx.beginPath();
    const flush = () => {
      const x = col / dpr;
      if (pen) ctx.lineTo(x, first);
      else ctx.moveTo(x, first);
      if (lo !== hi) {
        ctx.lineTo(x, lo);
        ctx.lineTo(x, hi);
      }
      ctx.lineTo(x, lastY);
      pen = true;
    };
    let i = 0;
    while (i < n) {
      if (i < usable && (i & (BLOCK - 1)) === 0) {
        const b = i >> BLOCK_SHIFT;
        let bmin = blk.min[b];
        let bmax = blk.max[b];
        if (log) {
          bmin = bmin > 0 ? Math.log10(bmin) : NaN;
          bmax = Math.log10(bmax);
        }
        if (bmin === bmin) {
          const pa = Math.round(offX + steps[i] * scaleX);
          if (pa === Math.round(offX + steps[i + BLOCK - 1] * scaleX)) {
            const vf = log ? Math.log10(ys[i]) : ys[i];
            const vl = log ? Math.log10(ys[i + BLOCK - 1]) : ys[i + BLOCK - 1];
            const pyTop = top + (y0 - bmax) * sy;
            const pyBottom = top + (y0 - bmin) * sy;
            if (open && pa === col) {
              if (pyTop < lo) lo = pyTop;
              if (pyBottom > hi) hi = pyBottom;
            } else {
              if (open) flush();
              col = pa;
              first = top + (y0 - vf) * sy;
              lo = pyTop;
              hi = pyBottom;
              open = true;
            }
            lastY = top + (y0 - vl) * sy;
            i += BLOCK;
            continue;
          }
        }
      }
      let v = ys[i];
      if (log) v = v > 0 ? Math.log10(v) : NaN;
      if (!Number.isFinite(v)) {
        if (open) flush();
        open = false;
        pen = false; // a gap in the line
        i += 1;
        continue;
      }
      const px = Math.round(offX + steps[i] * scaleX);
      const py = top + (y0 - v) * sy;
      if (open && px === col) {
        if (py < lo) lo = py;
        if (py > hi) hi = py;
        lastY = py;
      } else {
        if (open) flush();
        col = px;
        first = lo = hi = lastY = py;
        open = true;
      }
      i += 1;
    }
    if (open) flush();
    ctx.stroke();
  }

  function drawChart(chart) {
    const { ctx, width: W, height: H, dpr } = chart;
    if (W < 10 || H < 10) return;
    if (!theme) readTheme();
    const log = state.logScale;
    const w = state.smoothing;
    const visible = chart.series.filter((s) => s.n > 0 && runVisible(s.run));
    let xmin = Infinity;
    let xmax = -Infinity;
    let ymin = Infinity;
    let ymax = -Infinity;
    let points = 0;
    for (const s of visible) {
      refreshRange(s);
      points += s.n;
      if (s.steps[0] < xmin) xmin = s.steps[0];
      if (s.steps[s.n - 1] > xmax) xmax = s.steps[s.n - 1];
      const lo = log ? s.minPos : s.min;
      if (lo < ymin) ymin = lo;
      if (s.max > ymax) ymax = s.max;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    chart.layout = null;
    if (!Number.isFinite(xmin)) {
      ctx.fillStyle = theme.muted;
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(log ? "no positive values for a log scale" : "no data", W / 2, H / 2);
      return;
    }
    if (xmin === xmax) {
      xmin -= 1;
      xmax += 1;
    }
    let noPositive = false;
    if (log) {
      if (!Number.isFinite(ymin) || !(ymax > 0)) {
        noPositive = true;
        ymin = 1;
        ymax = 10;
      }
      ymin = Math.log10(ymin);
      ymax = Math.log10(ymax);
    } else if (!Number.isFinite(ymin)) {
      ymin = 0;
      ymax = 1;
    }
    if (ymin === ymax) {
      const pad = log ? 0.5 : Math.abs(ymin) * 0.1 || 1;
      ymin -= pad;
      ymax += pad;
    } else {
      const pad = (ymax - ymin) * 0.05;
      ymin -= pad;
      ymax += pad;
    }

    // axes and ticks
    ctx.font = "11px system-ui, sans-serif";
    const rows = Math.max(2, Math.round(H / 45));
    let yTicks;
    let yLabels;
    if (log) {
      yTicks = logTicks(ymin, ymax, rows).map((v) => Math.log10(v));
      yLabels = yTicks.map((lv) => formatLogTick(Math.pow(10, lv)));
    } else {
      const t = linearTicks(ymin, ymax, rows);
      yTicks = t.ticks;
      yLabels = yTicks.map((v) => formatTick(v, t.step));
    }
    let labelW = 0;
    for (const s of yLabels) labelW = Math.max(labelW, ctx.measureText(s).width);
    const left = Math.ceil(20 + labelW + 6);
    const right = 12;
    const top = 8;
    const bottom = 34;
    const pw = W - left - right;
    const ph = H - top - bottom;
    if (pw < 10 || ph < 10) return;
    const L = {
      x0: xmin,
      x1: xmax,
      sx: pw / (xmax - xmin),
      y0: ymax,
      y1: ymin,
      sy: ph / (ymax - ymin),
      log,
      left,
      top,
      pw,
      ph,
      dpr,
    };
    const xs = linearTicks(xmin, xmax, Math.max(2, Math.round(pw / 90)));

    ctx.lineWidth = 1;
    ctx.strokeStyle = theme.grid;
    ctx.beginPath();
    for (const v of yTicks) {
      const y = Math.round(top + (ymax - v) * L.sy) + 0.5;
      ctx.moveTo(left, y);
      ctx.lineTo(left + pw, y);
    }
    for (const v of xs.ticks) {
      const x = Math.round(left + (v - xmin) * L.sx) + 0.5;
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
      const y = top + (ymax - v) * L.sy;
      if (y >= top - 1 && y <= top + ph + 1) ctx.fillText(yLabels[i], left - 5, y);
    });
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of xs.ticks) {
      const x = left + (v - xmin) * L.sx;
      ctx.fillText(formatStep(v), Math.min(Math.max(x, left + 10), left + pw - 10), top + ph + 4);
    }
    ctx.fillText("step", left + pw / 2, top + ph + 19);
    ctx.save();
    ctx.translate(9, top + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(log ? "value (log)" : "value", 0, 0);
    ctx.restore();

    // lines
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, pw, ph);
    ctx.clip();
    ctx.lineJoin = "round";
    for (const s of visible) {
      ctx.strokeStyle = s.run.color;
      if (w > 0) {
        ctx.globalAlpha = 0.25;
        ctx.lineWidth = 1;
        strokeDecimated(ctx, s.steps, s.values, s.n, L, blocksFor(s.rawBlocks, s.values, s.n));
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.75;
        const sm = smoothed(s, w);
        strokeDecimated(ctx, s.steps, sm, s.n, L, blocksFor(s.smoothBlocks, sm, s.n));
      } else {
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.5;
        strokeDecimated(ctx, s.steps, s.values, s.n, L, blocksFor(s.rawBlocks, s.values, s.n));
      }
      if (s.n === 1) {
        const v = log ? Math.log10(s.values[0]) : s.values[0];
        if (Number.isFinite(v)) {
          ctx.fillStyle = s.run.color;
          ctx.beginPath();
          ctx.arc(left + (s.steps[0] - xmin) * L.sx, top + (ymax - v) * L.sy, 2.5, 0, Math.PI * 2);
          ctx.fill();
        }
      }
    }
    ctx.restore();
    if (noPositive) {
      ctx.fillStyle = theme.muted;
      ctx.textAlign = "center";
      ctx.fillText("no positive values for a log scale", left + pw / 2, top + ph / 2);
    }
    chart.layout = L;
    chart.drawnPoints = points;
    chart.draws += 1;
    state.draws += 1;
    const metaText = `${visible.length} run${visible.length === 1 ? "" : "s"} · ${formatCount(points)} pts`;
    if (chart.shown.meta !== metaText) {
      chart.shown.meta = metaText;
      chart.meta.textContent = metaText;
    }
    if (chart.hover) drawHover(chart);
  }

  function formatCount(n) {
    if (n >= 1e6) return `${trimZeros((n / 1e6).toFixed(1))}M`;
    if (n >= 1e4) return `${trimZeros((n / 1e3).toFixed(1))}k`;
    return String(n);
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  /* Hover readout: nearest point of every visible run to the cursor's step, drawn on the overlay
   * canvas so the chart itself is not redrawn. */
  function drawHover(chart) {
    const { octx, dpr, width: W, height: H } = chart;
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    octx.clearRect(0, 0, W, H);
    const L = chart.layout;
    const hv = chart.hover;
    if (!hv || !L || hv.x < L.left || hv.x > L.left + L.pw) {
      el.tooltip.hidden = true;
      return;
    }
    const step = L.x0 + (hv.x - L.left) / L.sx;
    const w = state.smoothing;
    const rows = [];
    for (const s of chart.series) {
      if (s.n === 0 || !runVisible(s.run)) continue;
      let i = lowerBound(s.steps, s.n, step);
      if (i >= s.n) i = s.n - 1;
      else if (i > 0 && step - s.steps[i - 1] < s.steps[i] - step) i -= 1;
      const value = s.values[i];
      const sm = w > 0 ? smoothed(s, w)[i] : value;
      rows.push({ s, i, value, sm, step: s.steps[i], wall: s.walls[i], t0: s.walls[0] });
    }
    if (rows.length === 0) {
      el.tooltip.hidden = true;
      return;
    }
    octx.strokeStyle = theme.axis;
    octx.lineWidth = 1;
    octx.setLineDash([3, 3]);
    octx.beginPath();
    octx.moveTo(Math.round(hv.x) + 0.5, L.top);
    octx.lineTo(Math.round(hv.x) + 0.5, L.top + L.ph);
    octx.stroke();
    octx.setLineDash([]);
    for (const r of rows) {
      const yv = L.log ? (r.sm > 0 ? Math.log10(r.sm) : NaN) : r.sm;
      if (!Number.isFinite(yv)) continue;
      const px = L.left + (r.step - L.x0) * L.sx;
      const py = L.top + (L.y0 - yv) * L.sy;
      octx.fillStyle = r.s.run.color;
      octx.strokeStyle = theme.card;
      octx.lineWidth = 1.5;
      octx.beginPath();
      octx.arc(px, py, 3.5, 0, Math.PI * 2);
      octx.fill();
      octx.stroke();
    }
    rows.sort((a, b) => (b.sm > a.sm ? 1 : b.sm < a.sm ? -1 : 0));
    const smoothCol = w > 0;
    let html = `<div class="tip-title">${escapeHtml(chart.tag)}</div><table><tr><th></th><th>run</th>`;
    if (smoothCol) html += "<th>smoothed</th>";
    html += "<th>value</th><th>step</th><th>time</th><th>relative</th></tr>";
    for (const r of rows) {
      html += `<tr><td><span class="swatch" style="display:inline-block;background:${r.s.run.color}"></span></td>`;
      html += `<td>${escapeHtml(r.s.run.name)}</td>`;
      if (smoothCol) html += `<td>${formatValue(r.sm)}</td>`;
      html += `<td>${formatValue(r.value)}</td><td>${r.step}</td>`;
      html += `<td>${Number.isFinite(r.wall) ? formatClock(r.wall * 1000) : ""}</td>`;
      html += `<td>${formatDuration(r.wall - r.t0)}</td></tr>`;
    }
    html += "</table>";
    const tip = el.tooltip;
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

  // ---------------------------------------------------------------- scheduling

  let frameQueued = false;

  function scheduleFrame() {
    if (!frameQueued) {
      frameQueued = true;
      requestAnimationFrame(frame);
    }
  }

  let drawCursor = 0; // round robin: charts left over by the budget go first next frame

  function frame() {
    frameQueued = false;
    if (state.layoutDirty) {
      state.layoutDirty = false;
      refreshLayout();
    }
    const list = Array.from(charts.values());
    const t0 = performance.now();
    let wake = Infinity;
    for (let k = 0; k < list.length; k++) {
      const index = (drawCursor + k) % list.length;
      const chart = list[index];
      if (!chart.dirty || chart.card.hidden || !chart.onScreen) continue;
      if (!chart.urgent && t0 - chart.drawnAt < DATA_REDRAW_MS) {
        wake = Math.min(wake, chart.drawnAt + DATA_REDRAW_MS);
        continue;
      }
      chart.dirty = false;
      chart.urgent = false;
      chart.drawnAt = t0;
      drawChart(chart);
      if (performance.now() - t0 > FRAME_BUDGET_MS) {
        drawCursor = index + 1;
        scheduleFrame(); // the rest next frame: input and scrolling stay responsive
        return;
      }
    }
    if (wake !== Infinity) setTimeout(scheduleFrame, Math.max(0, wake - performance.now()));
  }

  const resizeObserver = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const chart = charts.get(entry.target.parentElement.dataset.tag);
      if (chart) resizeChart(chart, entry.contentRect.width, entry.contentRect.height);
    }
  });

  const visibilityObserver = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const chart = charts.get(entry.target.dataset.tag);
        if (!chart) continue;
        chart.onScreen = entry.isIntersecting;
        if (chart.onScreen && chart.dirty) scheduleFrame();
      }
    },
    { rootMargin: "300px 0px" },
  );

  let statusQueued = false;

  function scheduleStatus() {
    if (!statusQueued) {
      statusQueued = true;
      setTimeout(renderStatus, 0);
    }
  }

  function pointsPerSecond(now) {
    while (rateBuckets.length && rateBuckets[0][0] < now - RATE_WINDOW_MS) rateBuckets.shift();
    let total = 0;
    for (const [, n] of rateBuckets) total += n;
    const span = Math.min(RATE_WINDOW_MS, Math.max(1000, now - (rateBuckets.length ? rateBuckets[0][0] : now)));
    return total / (span / 1000);
  }

  const statusShown = { shown: {} };

  function renderStatus() {
    statusQueued = false;
    const now = Date.now();
    const ss = state.streamState;
    const transportName = state.transport === "ws" ? "WebSocket" : "SSE";
    const streamText = {
      connecting: "connecting",
      live: "live",
      reconnecting: `reconnecting (${state.reconnects})`,
      offline: "offline",
    }[ss];
    setText(el.streamState, streamText, "stream", statusShown);
    if (el.streamState.dataset.state !== ss) el.streamState.dataset.state = ss;
    const pill = ss === "live" ? "live" : ss === "connecting" ? "connecting" : state.restState === "ok" ? "reconnecting" : "offline";
    if (el.pill.dataset.state !== pill) el.pill.dataset.state = pill;
    setText(el.pillText, pill === "live" ? `live · ${transportName}` : pill, "pill", statusShown);
    const rest = state.restState;
    const restText = {
      unknown: "checking",
      ok: `ok · ${state.restDetail}`,
      unreachable: "unreachable",
      error: `error · ${state.restDetail}`,
    }[rest];
    setText(el.restState, restText, "rest", statusShown);
    if (el.restState.dataset.state !== rest) el.restState.dataset.state = rest;
    const rate = pointsPerSecond(now);
    setText(el.rate, rate >= 100 ? String(Math.round(rate)) : trimZeros(rate.toFixed(1)), "rate", statusShown);
    const lu = state.lastUpdate === null ? "never" : `${formatClock(state.lastUpdate)} (${formatDuration((now - state.lastUpdate) / 1000)} ago)`;
    setText(el.lastUpdate, lu, "lu", statusShown);
    setText(el.lastSeq, state.lastSeq === null ? "—" : String(state.lastSeq), "seq", statusShown);
    const h = state.server;
    const info = h
      ? `v${h.version} · pid ${h.pid} · up ${formatDuration(h.uptime_s)} · ${clientsText(h.clients)}`
      : "—";
    setText(el.serverInfo, info, "server", statusShown);
    for (const run of runs.values()) {
      if (run.rowDirty) {
        run.rowDirty = false;
        refreshRunRow(run);
      }
    }
  }

  function clientsText(c) {
    if (!c || typeof c !== "object") return "";
    const total = (c.sse || 0) + (c.ws || 0);
    return `${total} client${total === 1 ? "" : "s"}`;
  }

  // ---------------------------------------------------------------- controls

  function loadView() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
    } catch (_) {
      saved = {};
    }
    if (typeof saved.smoothing === "number") state.smoothing = saved.smoothing;
    if (typeof saved.logScale === "boolean") state.logScale = saved.logScale;
    if (saved.transport === "ws" || saved.transport === "sse") state.transport = saved.transport;
    if (saved.theme === "dark" || saved.theme === "light") document.documentElement.dataset.theme = saved.theme;
    // URL parameters win, so a link (or a notebook cell) can open a given view.
    if (PAGE.has("run")) state.runFilter = PAGE.get("run");
    if (PAGE.has("tag")) state.tagFilter = PAGE.get("tag");
    if (PAGE.has("smoothing")) state.smoothing = Math.min(0.99, Math.max(0, Number(PAGE.get("smoothing")) || 0));
    if (PAGE.has("log")) state.logScale = PAGE.get("log") === "1" || PAGE.get("log") === "true";
    const tr = PAGE.get("transport");
    if (tr === "ws" || tr === "sse") state.transport = tr;
  }

  function saveView() {
    try {
      localStorage.setItem(
        STORE_KEY,
        JSON.stringify({
          smoothing: state.smoothing,
          logScale: state.logScale,
          transport: state.transport,
          theme: document.documentElement.dataset.theme || null,
        }),
      );
    } catch (_) {
      /* storage disabled: the view is just not remembered */
    }
  }

  function redrawAll() {
    for (const chart of charts.values()) {
      chart.dirty = true;
      chart.urgent = true;
    }
    scheduleFrame();
  }

  function debounce(fn, ms) {
    let t = null;
    return () => {
      if (t !== null) clearTimeout(t);
      t = setTimeout(() => {
        t = null;
        fn();
      }, ms);
    };
  }

  function bindControls() {
    el.runFilter.value = state.runFilter;
    el.tagFilter.value = state.tagFilter;
    el.smoothing.value = String(state.smoothing);
    el.smoothingValue.textContent = state.smoothing.toFixed(2);
    el.logScale.checked = state.logScale;
    el.transport.value = state.transport;

    const filterChanged = debounce(() => {
      state.runFilter = el.runFilter.value.trim();
      state.tagFilter = el.tagFilter.value.trim();
      applyFilters();
    }, 80);
    el.runFilter.addEventListener("input", filterChanged);
    el.tagFilter.addEventListener("input", filterChanged);
    el.smoothing.addEventListener("input", () => {
      state.smoothing = Number(el.smoothing.value);
      el.smoothingValue.textContent = state.smoothing.toFixed(2);
      redrawAll();
      saveView();
    });
    el.logScale.addEventListener("change", () => {
      state.logScale = el.logScale.checked;
      redrawAll();
      saveView();
    });
    el.transport.addEventListener("change", () => {
      state.transport = el.transport.value === "ws" ? "ws" : "sse";
      saveView();
      if (state.loaded) {
        backoffMs = 250;
        setStreamState("connecting");
        openStream(); // resumes from lastSeq on the other transport
      }
    });
    const setAll = (checked) => {
      for (const run of runs.values()) {
        run.checked = checked;
        run.box.checked = checked;
      }
      applyFilters();
    };
    el.runsAll.addEventListener("click", () => setAll(true));
    el.runsNone.addEventListener("click", () => setAll(false));
    el.theme.addEventListener("click", () => {
      const current =
        document.documentElement.dataset.theme ||
        (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
      document.documentElement.dataset.theme = current === "dark" ? "light" : "dark";
      readTheme();
      redrawAll();
      saveView();
    });
    matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => {
      readTheme();
      redrawAll();
    });
  }

  // ---------------------------------------------------------------- read-only state for tests

  function seriesSnapshot(s) {
    return {
      run: s.run.name,
      tag: s.tag,
      steps: Array.from(s.steps.subarray(0, s.n)),
      values: Array.from(s.values.subarray(0, s.n)),
      wallTimes: Array.from(s.walls.subarray(0, s.n)),
    };
  }

  window.lightningStream = Object.freeze({
    /** Plain-JSON copy of the dashboard state: safe to return from page.evaluate(). */
    snapshot() {
      const now = Date.now();
      return {
        transport: state.transport,
        streamState: state.streamState,
        restState: state.restState,
        lastSeq: state.lastSeq,
        loaded: state.loaded,
        reloads: state.reloads,
        reconnects: state.reconnects,
        draws: state.draws,
        pointsReceived: state.pointsReceived,
        messagesReceived: state.messagesReceived,
        pointsPerSecond: pointsPerSecond(now),
        lastUpdate: state.lastUpdate,
        smoothing: state.smoothing,
        logScale: state.logScale,
        runFilter: state.runFilter,
        tagFilter: state.tagFilter,
        errors: state.errors.slice(),
        runs: Array.from(runs.values(), (r) => ({
          run: r.name,
          color: r.color,
          state: r.state,
          lifecycle: lifecycle(r),
          checked: r.checked,
          visible: runVisible(r),
          lastStep: r.lastStep,
        })),
        charts: Array.from(charts.values(), (c) => ({
          tag: c.tag,
          visible: !c.card.hidden,
          draws: c.draws,
          drawnPoints: c.drawnPoints || 0,
          series: c.series.map((s) => ({ run: s.run.name, points: s.n, lastStep: s.n ? s.steps[s.n - 1] : null })),
        })),
      };
    },
    /** Points held for one series (copies), or null. */
    series(run, tag) {
      const s = series.get(seriesKey(run, tag));
      return s ? seriesSnapshot(s) : null;
    },
    /** The smoothed values the chart draws for one series at the current smoothing, or null. */
    smoothed(run, tag) {
      const s = series.get(seriesKey(run, tag));
      if (!s) return null;
      return state.smoothing > 0 ? Array.from(smoothed(s, state.smoothing).subarray(0, s.n)) : Array.from(s.values.subarray(0, s.n));
    },
  });

  // ---------------------------------------------------------------- boot

  loadView();
  bindControls();
  applyFilters();
  readTheme();
  setInterval(renderStatus, 500);
  healthLoop();
  start();
})();

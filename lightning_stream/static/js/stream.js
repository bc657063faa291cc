/* One live connection (SSE or WebSocket) delivering scalars, status and reset messages, in the
 * columnar format (`format=columns`: one entry per series touched); point objects are read too.
 * Reconnection policy is the caller's (sync.js): this module reports `onFail` once per connection
 * and ignores late callbacks of connections it closed. */

import { parseJSON, streamUrl } from "./api.js";
import { num } from "./store.js";

/** Columns of a message: [{run, tag, steps, wall_times, values}] from either wire shape. */
export function messageColumns(msg) {
  if (msg && Array.isArray(msg.series)) return msg.series;
  const out = [];
  if (!msg || !Array.isArray(msg.points)) return out;
  let cur = null;
  for (const p of msg.points) {
    if (!p || typeof p.run !== "string" || typeof p.tag !== "string") continue;
    if (!cur || cur.run !== p.run || cur.tag !== p.tag) {
      cur = { run: p.run, tag: p.tag, steps: [], wall_times: [], values: [] };
      out.push(cur);
    }
    cur.steps.push(p.step);
    cur.wall_times.push(p.wall_time);
    cur.values.push(p.value);
  }
  return out;
}

/**
 * Open a connection. handlers: onOpen(), onScalars(seq, columns), onStatus(seq, payload),
 * onReset(seq, payload), onError(message), onFail(). Returns {close()}.
 */
export function openStream(transport, lastSeq, handlers) {
  let closed = false;
  const guard =
    (fn) =>
    (...args) => {
      if (!closed) fn(...args);
    };
  const h = {
    onOpen: guard(handlers.onOpen),
    onScalars: guard(handlers.onScalars),
    onStatus: guard(handlers.onStatus),
    onReset: guard(handlers.onReset),
    onError: guard(handlers.onError),
    onFail: guard(() => {
      closed = true;
      handlers.onFail();
    }),
  };
  const conn = transport === "ws" ? openWebSocket(lastSeq, h) : openEventSource(lastSeq, h);
  return {
    close() {
      closed = true;
      conn.close();
    },
  };
}

function openEventSource(lastSeq, h) {
  const es = new EventSource(streamUrl("stream", { last_event_id: lastSeq, format: "columns" }));
  const seqOf = (e) => (e.lastEventId === "" ? null : Number(e.lastEventId));
  es.onopen = () => h.onOpen();
  es.addEventListener("scalars", (e) => h.onScalars(seqOf(e), messageColumns(parseJSON(e.data))));
  es.addEventListener("status", (e) => h.onStatus(seqOf(e), parseJSON(e.data)));
  es.addEventListener("reset", (e) => h.onReset(seqOf(e), parseJSON(e.data)));
  // The browser would retry by itself, but with the stale ?last_event_id= of the first URL;
  // the caller reconnects from the last id it saw, with backoff.
  es.onerror = () => {
    es.close();
    h.onFail();
  };
  return { close: () => es.close() };
}

function openWebSocket(lastSeq, h) {
  const url = streamUrl("ws");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.onopen = () => {
    const sub = { op: "subscribe", run: "*", tag: "*", format: "columns" };
    if (lastSeq !== null) sub.since = lastSeq;
    ws.send(JSON.stringify(sub));
    h.onOpen();
  };
  ws.onmessage = (e) => {
    const msg = parseJSON(e.data);
    const seq = msg.seq === undefined ? null : num(msg.seq);
    if (msg.type === "scalars") h.onScalars(seq, messageColumns(msg));
    else if (msg.type === "status") h.onStatus(seq, msg);
    else if (msg.type === "reset") h.onReset(seq, msg);
    else if (msg.type === "error") h.onError(String(msg.message));
  };
  ws.onclose = () => h.onFail();
  return {
    close: () => {
      ws.onclose = null;
      ws.close();
    },
  };
}

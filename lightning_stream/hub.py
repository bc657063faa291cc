"""The in-memory pub/sub core: series storage, global sequence numbers, replay, fan-out.

Loop-confined: every method runs on the server's event loop (no locks). The hub
knows no transport and no encoding: ``wire.py`` turns a :class:`Message` into the
JSON a subscriber gets (cached on the message through :meth:`Message.memo`), and
``sse.py``/``websocket.py`` into frames.

How it stays bounded and exact:

* Points are stored per (run, tag) in typed arrays (``series.py``; its docstring
  states the TensorBoard purge rule for restarts). Past
  ``config.memory_budget_bytes`` (24 bytes per point), the largest series are
  decimated until a quarter of the budget is free again (a series is never
  thinned below ``series.MIN_DECIMATE`` points: that is the floor per series).
* ``ingest`` stores points at once (so REST sees them) and queues them; every
  ``config.tick_s`` the queue becomes one or more ``scalars`` messages (at most
  :data:`MAX_MESSAGE_POINTS` points each, one batch per series), each with the
  next global ``seq``.
  ``publish_status`` flushes first, so a status never overtakes earlier points.
* All messages live in ONE shared log, bounded by ``config.replay_points``
  points (a status counts as one; the newest message is always kept) and by
  :data:`MAX_REPLAY_MESSAGES` (or twice ``subscriber_queue``) messages. A
  subscriber is only a cursor into that log, so fan-out copies nothing,
  replay is the same code path as live delivery (no gap, no duplicate), and a
  stalled subscriber holds no memory of its own.
* A subscriber more than ``config.subscriber_queue`` messages behind the newest
  live message, or whose next message was evicted, gets ONE ``reset`` (counted
  in ``stats()["resets"]``) and continues from the newest seq. After a reset a
  client re-reads via REST: REST already holds every point of every seq <= the
  reset's seq (and maybe newer ones still queued; re-receiving those is
  harmless under the purge rule).
* A series that goes back below its last step (a run resumed from a checkpoint
  into the same directory) gets a logged ``reset`` scoped to it (``run``, ``tag``,
  ``from_step``, its own ``seq``) between the points before and after the rewind,
  so raw clients know to drop what the new points replace (``_queue_rewound``).
* Messages are encoded lazily, once per (filter, format), and cached on the message:
  a huge initial scan with nobody subscribed never becomes JSON, and every
  subscriber whose filter matches the whole message shares one string. Scalars go
  out as point objects (``format="points"``, the SPEC's default) or as one
  ``{"run","tag","steps","wall_times","values"}`` entry per series (``"columns"``).

Non-finite floats (NaN, ±inf) are not valid JSON; they are sent as the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (``Number(s)`` / ``float(s)`` read them).

Restarts: a server starts its hub at ``seq_start`` = the wall clock in
microseconds, so every seq of a restarted server is above every seq its
predecessor handed out; a client resuming with an old ``since`` then gets a
``reset`` (the replay log cannot hold it) instead of silently missing data.

Why one module of this length: series, log, cursors and tick are one loop-confined state whose
invariants (seq order, replay on the live path, the purge rule, the budgets) hold only together.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from lightning_stream.config import ServerConfig
from lightning_stream.errors import HubClosed
from lightning_stream.globs import MAX_GLOB_LEN, GlobFilter, validate_glob
from lightning_stream.scalars import ScalarBatch
from lightning_stream.series import BYTES_PER_POINT, MIN_DECIMATE, Series, Window

_GLOB_CHARS = frozenset("*?[")  # a pattern without them matches only itself (fnmatch)

__all__ = [
    "FORMATS",
    "MAX_GLOB_LEN",
    "MAX_MESSAGE_POINTS",
    "MAX_REPLAY_MESSAGES",
    "STATES",
    "Hub",
    "HubClosed",
    "Message",
    "Subscription",
    "View",
    "validate_glob",
]

STATES = ("started", "epoch", "finished", "failed")
MAX_TICK_S = 0.05  # longest coalescing interval, reached with many subscribers
TICK_SUBSCRIBERS = 50  # subscribers per config.tick_s of coalescing
BROADCAST_SENDS_PER_S = 62.5  # a busy run's broadcasts x subscribers per second, at most (see broadcast_gap_s)
MAX_BROADCAST_GAP_S = 0.25  # ...but a busy run's points never wait longer than this for the fan-out's sake
MAX_MESSAGE_POINTS = 2_000  # bounds one SSE/WS frame to ~200 KB of JSON (what a slow client may pin)
MAX_REPLAY_MESSAGES = 10_000
LOW_WATER = 0.75  # decimate down to this fraction of the budget, so it happens rarely
#: payload forms of ``scalars`` messages: point objects (SPEC's default) or one column set per series
FORMATS = ("points", "columns")


T = TypeVar("T")
logger = logging.getLogger(__name__)


class View(NamedTuple):
    """What of one message a subscriber receives: nothing, some batches, or the status/reset payload."""

    key: tuple[str, str, str]  # (run glob, tag glob, format); ("*", "*", format) when it gets it all
    batches: tuple[ScalarBatch, ...] = ()
    payload: dict[str, Any] | None = None
    points: int = 0

    @property
    def empty(self) -> bool:
        return not self.batches and self.payload is None

    @property
    def format(self) -> str:
        return self.key[2]


@dataclass(frozen=True, eq=False)
class Message:
    """One outgoing message: ``scalars`` (batches), ``status`` or ``reset`` (payload), with its ``seq``.

    The hub does not encode it: :meth:`view` says what a subscriber gets, and :meth:`memo` caches
    whatever a transport derives from that (``wire.py``'s JSON, frames) per (filter, format), so
    a subscriber only ever causes the encoding of its own format, and every subscriber whose filter
    matches the whole message shares one.
    """

    kind: str
    seq: int
    batches: tuple[ScalarBatch, ...] = ()
    payload: dict[str, Any] | None = None
    npoints: int = 0
    _cache: dict[tuple[str, tuple[str, str, str]], Any] = field(default_factory=dict, repr=False)

    def view(self, sub: Subscription) -> View:
        """What of this message ``sub`` receives; cached per (filter, format)."""
        flt = sub._filter
        fmt = sub.format if self.kind == "scalars" else "points"  # status and reset read the same in both
        key = (*flt.key, fmt)
        hit: View | None = self._cache.get(("view", key))
        if hit is not None:
            return hit
        every = ("*", "*", fmt)
        if self.kind == "scalars":
            matched = tuple(b for b in self.batches if flt.series(b.run, b.tag))
            if len(matched) == len(self.batches):
                hit = View(every, self.batches, None, self.npoints)
            elif not matched:
                hit = View(key)
            else:
                hit = View(key, matched, None, sum(len(b) for b in matched))
        else:
            assert self.payload is not None
            if self.kind == "status":
                seen = flt.run(self.payload["run"])
            else:  # a series reset, for a series this subscriber may not follow
                seen = "tag" not in self.payload or flt.series(self.payload["run"], self.payload["tag"])
            hit = View(every, (), self.payload) if seen else View(key)
        self._cache[("view", key)] = hit
        return hit

    def memo(self, sub: Subscription, name: str, build: Callable[[View], T]) -> T:
        """``build(view)`` for ``sub``'s view of this message, cached under ``name`` per (filter, format)."""
        view = self.view(sub)
        if (name, view.key) in self._cache:
            hit: T = self._cache[(name, view.key)]
            return hit
        value = self._cache[(name, view.key)] = build(view)
        return value

    def points_for(self, sub: Subscription) -> int:
        """How many points of this message ``sub`` receives."""
        return self.view(sub).points


def _cut(batch: ScalarBatch, start: int, end: int) -> ScalarBatch:
    return ScalarBatch(
        batch.run, batch.tag, batch.steps[start:end], batch.wall_times[start:end], batch.values[start:end]
    )


def _merge_by_series(batches: list[ScalarBatch]) -> list[ScalarBatch]:
    """One batch per (run, tag), in first-seen order, points in arrival order: few objects per message."""
    groups: dict[tuple[str, str], list[ScalarBatch]] = {}
    for b in batches:
        groups.setdefault((b.run, b.tag), []).append(b)
    if len(groups) == len(batches):
        return batches
    merged = []
    for (run, tag), group in groups.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        out = ScalarBatch(run, tag)
        for b in group:
            out.steps.extend(b.steps)
            out.wall_times.extend(b.wall_times)
            out.values.extend(b.values)
        merged.append(out)
    return merged


class Subscription:
    """A cursor into the hub's message log with a (run, tag) glob filter.

    Obtain one from :meth:`Hub.subscribe`; read with ``await sub.get()``.
    """

    def __init__(
        self,
        hub: Hub,
        flt: GlobFilter,
        cursor: int,
        attach_seq: int,
        reset: Message | None,
        format: str = "points",
    ) -> None:
        self._hub = hub
        self._filter = flt
        self.format = format  # payload form of scalars messages (FORMATS)
        self._cursor = cursor  # seq of the next message to read
        self._attach_seq = attach_seq  # messages <= this were replay, not live backlog
        self._reset = reset
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[], None] | None = None
        self._closed = False

    @property
    def run_glob(self) -> str:
        return self._filter.run_glob

    @property
    def tag_glob(self) -> str:
        return self._filter.tag_glob

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def next_seq(self) -> int:
        """Seq of the next message this subscription would read."""
        return self._cursor

    def matches(self, run: str, tag: str | None = None) -> bool:
        """Whether points of (run, tag), or a status of ``run`` when tag is None, pass the filter."""
        return self._filter.run(run) if tag is None else self._filter.series(run, tag)

    def get_nowait(self) -> Message | None:
        """The next message if one is ready, else None; raises HubClosed once closed."""
        if self._closed:
            raise HubClosed("subscription is closed; subscribe again to keep reading")
        return self._hub._next_for(self)

    async def get(self) -> Message:
        """Wait for the next message for this filter (a ``reset`` first, if one is due)."""
        while True:
            msg = self.get_nowait()
            if msg is not None:
                return msg
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._hub._waiting.add(self)
            try:
                await waiter
            finally:
                self._waiter = None
                self._hub._waiting.discard(self)

    def listen(self, listener: Callable[[], None] | None) -> None:
        """Have the hub call ``listener()`` whenever messages may be ready, or stop with None.

        The call is synchronous, from inside the hub's broadcast (``flush``, ``publish_status``) and
        once from :meth:`close`: the listener reads with :meth:`get_nowait` and must not raise or
        await. This is how a transport writes to a fast client without a task wake-up per message
        (``direct.py``); ``get()`` keeps working for everyone else.
        """
        if self._closed:
            return
        self._listener = listener
        if listener is None:
            self._hub._listening.pop(self, None)
        else:
            self._hub._listening[self] = listener

    def close(self) -> None:
        """Stop the subscription; a pending or later ``get()`` raises HubClosed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._hub._detach(self)
        self._wake()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener()  # its get_nowait() raises HubClosed now: that is how it learns

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@dataclass(slots=True)
class _Run:
    logdir: str | None = None
    series: dict[str, Series] = field(default_factory=dict)
    status: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)


class Hub:
    """Series storage + sequence numbers + replay log + subscriptions; see the module docstring."""

    def __init__(self, config: ServerConfig, *, seq_start: int = 0) -> None:
        if isinstance(seq_start, bool) or not isinstance(seq_start, int) or seq_start < 0:
            raise ValueError(f"seq_start={seq_start!r} must be a non-negative int")
        self.config = config
        self.seq = seq_start
        self._runs: dict[str, _Run] = {}
        self._log: deque[Message] = deque()
        self._log_points = 0
        self._pending: list[ScalarBatch] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._subs: dict[Subscription, None] = {}
        self._waiting: set[Subscription] = set()
        self._listening: dict[Subscription, Callable[[], None]] = {}
        self._closed = False
        self._points_held = 0
        self._max_points = max(MIN_DECIMATE, config.memory_budget_bytes // BYTES_PER_POINT)
        self._next_enforce = self._max_points  # raised when decimation cannot get under the budget
        # Few-point messages cost ~0.5 KB each, so the log is also capped in messages (~50 s at 200 ticks/s).
        self._max_log = max(MAX_REPLAY_MESSAGES, 2 * config.subscriber_queue)
        self._counters = dict.fromkeys(
            (
                "points_in",
                "points_out",
                "batches_out",
                "status_out",
                "resets",
                "replay_hits",
                "replay_misses",
                "points_purged",
                "series_resets",
                "points_decimated",
                "decimations",
            ),
            0,
        )

    # ---- ingest -------------------------------------------------------------------------------

    def note_run(self, run: str, logdir: str | None) -> None:
        """Make ``run`` known (listed by ``runs()`` even before it has points)."""
        info = self._runs.setdefault(run, _Run())
        if logdir is not None:
            info.logdir = logdir

    def note_hparams(self, run: str, hparams: dict[str, Any]) -> None:
        """The hparams ``run`` was started with (listed by ``runs()``; the newest replace older ones)."""
        self._runs.setdefault(run, _Run()).hparams = dict(hparams)

    def ingest(self, batches: Iterable[ScalarBatch], *, coalesced: bool = False) -> None:
        """Store points (purge rule, budget) and queue them for the next tick's broadcast.

        The hub takes ownership of the batches: a new series adopts a batch's arrays
        instead of copying them (a big initial scan is held once), and a queued or
        replayable message may share them; do not mutate a batch or its arrays after
        handing it over. Without a running loop nothing schedules the tick; call
        :meth:`flush` yourself.

        ``coalesced=True``: the caller already gathered these (one read of the watcher,
        which reads a busy run 20 ms to 0.5 s apart, see ``watcher.busy_gap_for``), so they go out now, not a tick later: a
        tick is one more wake-up of the server per read, and waking costs more than the
        work (``benchmarks/README.md``). With many subscribers the tick still applies,
        since it is then longer than ``config.tick_s`` to bound the fan-out.
        """
        if self._closed:
            return
        counters = self._counters
        for batch in batches:
            n = len(batch)
            if n == 0:
                continue
            series = self._series_for(batch.run, batch.tag)
            before = len(series)
            rewinds: list[tuple[int, int]] = []
            purged = series.extend(batch.steps, batch.wall_times, batch.values, rewinds)
            self._points_held += len(series) - before
            counters["points_in"] += n
            counters["points_purged"] += purged
            if rewinds:
                self._queue_rewound(batch, rewinds)
            else:
                self._pending.append(batch)
            if self._points_held > self._next_enforce:
                self._enforce_budget()
        if self._pending and coalesced and self.tick_s() <= self.config.tick_s:
            self.flush()
            return
        if self._pending and self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_handle = loop.call_later(self.tick_s(), self._on_tick)

    def _queue_rewound(self, batch: ScalarBatch, rewinds: list[tuple[int, int]]) -> None:
        """Queue a batch that went back below its series' last step, with a series ``reset`` before each rewind.

        Everything queued before goes out first, then ``event: reset`` with ``run``, ``tag`` and
        ``from_step``, then the new points: a client that keeps the series drops its points from
        ``from_step`` on when the reset arrives (the stored series already did), and appends the
        rest as usual. Without it a raw client would see old steps again with no signal.
        """
        start = 0
        for index, step in rewinds:
            if index > start:
                self._pending.append(_cut(batch, start, index))
            self.flush()
            self.seq += 1
            reason = (
                f"run {batch.run!r} wrote {batch.tag!r} again from step {step} (resumed from a checkpoint?): "
                f"drop your points of this series from step {step} on; the new ones follow"
            )
            payload = {"seq": self.seq, "reason": reason, "run": batch.run, "tag": batch.tag, "from_step": step}
            self._append(Message("reset", self.seq, payload=payload))
            self._counters["series_resets"] += 1
            start = index
        self._pending.append(batch if start == 0 else _cut(batch, start, len(batch)))

    def tick_s(self) -> float:
        """Coalescing interval: ``config.tick_s`` for a few clients, longer for many.

        Fan-out cost is one send per subscriber per tick, so with hundreds of
        subscribers a longer tick (up to ``MAX_TICK_S``) trades a little latency
        for far fewer writes; with a handful it stays at ``config.tick_s``.
        """
        return min(
            max(self.config.tick_s, MAX_TICK_S), self.config.tick_s * max(1.0, len(self._subs) / TICK_SUBSCRIBERS)
        )

    def broadcast_gap_s(self) -> float:
        """How far apart a busy run's reads may be, for the fan-out's sake (the watcher's cap; it asks).

        Each broadcast is one send and one wake-up per subscriber, here and in every client's
        process, and on a small machine that CPU comes out of training
        (``benchmarks/bench_overhead.py``). A busy run is read in batches anyway (the watcher's
        ``busy_gap_for``); with more than a handful of subscribers the batches get bigger, so that
        broadcasts x subscribers stay near ``BROADCAST_SENDS_PER_S``: 160 ms apart with 10
        subscribers, never more than ``MAX_BROADCAST_GAP_S``. A run logging up to 50 steps/s per
        series is read at each write whatever this says; up to 200 steps/s, at most
        ``watcher.LIVE_GAP_S`` (25 ms) or this gap apart, whichever is longer (32 ms with 2
        subscribers), and never further apart than its rate earns. Beyond 200 steps/s the
        watcher's own gap (125 ms at 300 steps/s, up to 0.5 s) is longer than this one from ~335
        steps/s with 10 subscribers, from 425 steps/s with 16 or more.
        """
        return min(MAX_BROADCAST_GAP_S, len(self._subs) / BROADCAST_SENDS_PER_S)

    def publish_status(self, run: str, state: str, **fields: Any) -> None:
        """Broadcast a run lifecycle change (``state`` in STATES); earlier points go out first."""
        if state not in STATES:
            raise ValueError(f"state={state!r} is not a run state; use one of {', '.join(STATES)}")
        clash = sorted({"type", "seq"} & fields.keys())
        if clash:
            raise ValueError(f"status fields {clash!r} clash with message keys; rename them")
        payload = {"run": run, "state": state, **fields}
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"status fields {fields!r} are not plain JSON ({exc}); pass str/int/float/bool/None"
            ) from None
        if self._closed:
            return
        self.flush()
        self._runs.setdefault(run, _Run()).status = state
        self.seq += 1
        self._append(Message("status", self.seq, payload=payload))
        self._counters["status_out"] += 1
        self._wake()

    def flush(self) -> None:
        """Turn queued points into ``scalars`` messages now (normally done by the tick)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        chunk: list[ScalarBatch] = []
        count = 0
        for batch in _merge_by_series(pending):
            n = len(batch)
            start = 0
            while start < n:
                take = min(MAX_MESSAGE_POINTS - count, n - start)
                if start == 0 and take == n:
                    piece = batch
                else:
                    end = start + take
                    piece = ScalarBatch(
                        batch.run,
                        batch.tag,
                        batch.steps[start:end],
                        batch.wall_times[start:end],
                        batch.values[start:end],
                    )
                chunk.append(piece)
                count += take
                start += take
                if count >= MAX_MESSAGE_POINTS:
                    self._publish_chunk(chunk, count)
                    chunk, count = [], 0
        if chunk:
            self._publish_chunk(chunk, count)
        self._wake()

    def _on_tick(self) -> None:
        self._flush_handle = None
        self.flush()

    def _publish_chunk(self, chunk: list[ScalarBatch], count: int) -> None:
        self.seq += 1
        self._append(Message("scalars", self.seq, batches=tuple(chunk), npoints=count))
        self._counters["batches_out"] += 1

    def _append(self, msg: Message) -> None:
        self._log.append(msg)
        self._log_points += max(1, msg.npoints)
        limit = self.config.replay_points
        while (self._log_points > limit or len(self._log) > self._max_log) and len(self._log) > 1:
            old = self._log.popleft()
            self._log_points -= max(1, old.npoints)
            old._cache.clear()  # its encodings are re-made if a lagging reader still asks

    def _wake(self) -> None:
        if self._listening:
            for sub, listener in list(self._listening.items()):  # a listener may stop listening
                try:
                    listener()
                except Exception:  # a transport's bug must not stop the broadcast to everyone else
                    logger.exception("a subscription's listener failed; the subscription is closed")
                    sub.listen(None)
                    sub.close()
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, set()
        for sub in waiting:
            sub._wake()

    def _series_for(self, run: str, tag: str) -> Series:
        info = self._runs.get(run)
        if info is None:
            info = self._runs[run] = _Run()
        series = info.series.get(tag)
        if series is None:
            series = info.series[tag] = Series(run, tag)
        return series

    def _enforce_budget(self) -> None:
        """Decimate the largest series until the held points are back under LOW_WATER of the budget."""
        target = int(self._max_points * LOW_WATER)
        heap = [(-len(s), i, s) for i, s in enumerate(self._all_series()) if len(s) >= MIN_DECIMATE]
        heapq.heapify(heap)
        while self._points_held > target and heap:
            _, i, series = heapq.heappop(heap)
            dropped = series.decimate()
            if dropped == 0:
                continue
            self._points_held -= dropped
            self._counters["points_decimated"] += dropped
            self._counters["decimations"] += 1
            if len(series) >= MIN_DECIMATE:
                heapq.heappush(heap, (-len(series), i, series))
        # Every series is down to its floor (MIN_DECIMATE points): do not rescan on every batch.
        self._next_enforce = max(self._max_points, self._points_held + self._points_held // 4)

    def _all_series(self) -> Iterable[Series]:
        for info in self._runs.values():
            yield from info.series.values()

    # ---- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self,
        run_glob: str = "*",
        tag_glob: str = "*",
        since: int | None = None,
        format: str = "points",
    ) -> Subscription:
        """A new subscription; with ``since=SEQ`` it first replays every message with seq > SEQ.

        If SEQ is older than the replay log (or newer than ``self.seq``) the first
        message is a ``reset`` instead, and delivery continues from the newest seq.
        ``format`` (one of :data:`FORMATS`) is the payload form its scalars messages take;
        seqs, replay and resets are the same in both.
        Raises ValueError for a bad glob, ``since`` or ``format``, HubClosed after ``close()``.
        """
        validate_glob(run_glob, name="run")
        validate_glob(tag_glob, name="tag")
        if format not in FORMATS:
            raise ValueError(f"format={format!r} is not known; use one of {', '.join(FORMATS)}")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"since={since!r} must be a non-negative integer seq (the last one received)")
        if self._closed:
            raise HubClosed("the hub is closed (server shutting down); reconnect later")
        cursor = self.seq + 1
        reset = None
        if since is not None:
            first = self._log[0].seq if self._log else self.seq + 1
            if since > self.seq:
                reset = self._reset_message(
                    f"since={since} is ahead of the server's last seq {self.seq} (server restarted?)"
                )
                self._counters["replay_misses"] += 1
            elif since + 1 < first:
                reset = self._reset_message(f"messages after seq {since} are no longer held (oldest is {first})")
                self._counters["replay_misses"] += 1
            else:
                cursor = since + 1
                self._counters["replay_hits"] += 1
        sub = Subscription(self, GlobFilter(run_glob, tag_glob), cursor, self.seq, reset, format)
        self._subs[sub] = None
        return sub

    def _reset_message(self, reason: str) -> Message:
        text = f"{reason}; re-read history via REST, then continue after seq {self.seq}"
        return Message("reset", self.seq, payload={"seq": self.seq, "reason": text})

    def _next_for(self, sub: Subscription) -> Message | None:
        if sub._reset is not None:
            msg, sub._reset = sub._reset, None
            return msg
        log = self._log
        limit = self.config.subscriber_queue
        while sub._cursor <= self.seq:
            first = log[0].seq
            backlog = self.seq - max(sub._cursor - 1, sub._attach_seq)
            if backlog > limit or sub._cursor < first:
                why = (
                    f"fell more than {limit} messages behind"
                    if backlog > limit
                    else f"messages from seq {sub._cursor} were evicted before being read"
                )
                self._counters["resets"] += 1
                sub._cursor = self.seq + 1
                return self._reset_message(why)
            msg = log[sub._cursor - first]
            sub._cursor += 1
            view = msg.view(sub)
            if not view.empty:
                self._counters["points_out"] += view.points
                return msg
        return None

    def _detach(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)
        self._waiting.discard(sub)
        self._listening.pop(sub, None)

    async def close(self) -> None:
        """End every subscription (their ``get()`` raises HubClosed) and stop the tick."""
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for sub in list(self._subs):
            sub.close()
        self._waiting.clear()
        # Free the data now: something may keep this hub object alive after its server is gone
        # (aiohttp's module-level middleware lru_cache holds handlers of old apps, aiohttp#9158).
        self._runs.clear()
        self._log.clear()
        self._log_points = 0
        self._pending.clear()
        self._points_held = 0

    # ---- queries ------------------------------------------------------------------------------

    def has_run(self, run: str) -> bool:
        return run in self._runs

    def tags(self, run: str) -> list[str]:
        """Sorted tags of ``run``; KeyError if the run is unknown."""
        return sorted(self._run(run).series)

    def held(self, run: str, tag: str) -> int:
        """Points held of (run, tag), 0 for an unknown one: sizes an answer before anything is copied."""
        info = self._runs.get(run)
        series = None if info is None else info.series.get(tag)
        return 0 if series is None else len(series)

    def runs(self) -> list[dict[str, Any]]:
        """One dict per run, sorted: run, logdir, tags, last_step, last_wall_time, status, hparams."""
        out = []
        for name in sorted(self._runs):
            info = self._runs[name]
            steps = [s.last_step for s in info.series.values() if s.last_step is not None]
            times = [s.last_wall_time for s in info.series.values() if s.last_wall_time is not None]
            out.append(
                {
                    "run": name,
                    "logdir": info.logdir,
                    "tags": sorted(info.series),
                    "last_step": max(steps) if steps else None,
                    "last_wall_time": max(times) if times else None,
                    "status": info.status,
                    "hparams": info.hparams,
                }
            )
        return out

    def scalars(self, run: str, tag: str, since_step: int | None = None, limit: int | None = None) -> ScalarBatch:
        """Held points of (run, tag) with step > ``since_step``, the first ``limit`` of them, in step order.

        KeyError (with a message naming what exists) for an unknown run or tag;
        ValueError for a negative ``limit``.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit={limit!r} must be >= 0")
        info = self._run(run)
        series = info.series.get(tag)
        if series is None:
            known = ", ".join(repr(t) for t in sorted(info.series)[:20]) or "none yet"
            raise KeyError(f"run {run!r} has no tag {tag!r}; its tags: {known}")
        return series.query(since_step, limit)

    def select(self, run_glob: str = "*", tag_glob: str = "*") -> list[tuple[str, str]]:
        """(run, tag) of every held series matching both globs (the rules of :meth:`subscribe`), sorted."""
        flt = GlobFilter(validate_glob(run_glob, name="run"), validate_glob(tag_glob, name="tag"))
        if _GLOB_CHARS.isdisjoint(tag_glob):  # one tag (a chart's): a lookup per run, not fnmatch per series
            return [
                (run, tag_glob) for run in sorted(self._runs) if tag_glob in self._runs[run].series and flt.run(run)
            ]
        return [
            (run, tag)
            for run in sorted(self._runs)
            if flt.run(run)
            for tag in sorted(self._runs[run].series)
            if flt.series(run, tag)
        ]

    def window(
        self,
        run: str,
        tag: str,
        start_step: int | None = None,
        end_step: int | None = None,
        max_points: int | None = None,
    ) -> Window:
        """Held points of (run, tag) with ``start_step <= step <= end_step``, thinned to ``max_points``.

        See :meth:`Series.window`; KeyError for an unknown run or tag (as :meth:`scalars`).
        """
        info = self._run(run)
        series = info.series.get(tag)
        if series is None:
            raise KeyError(f"run {run!r} has no tag {tag!r}")
        return series.window(start_step, end_step, max_points)

    def _run(self, run: str) -> _Run:
        info = self._runs.get(run)
        if info is None:
            known = ", ".join(repr(r) for r in sorted(self._runs)[:20]) or "none yet"
            raise KeyError(f"unknown run {run!r}; known runs: {known}")
        return info

    def stats(self) -> dict[str, Any]:
        """Counters for /health and /metrics (cheap: O(series) for bytes_held)."""
        return {
            **self._counters,
            "seq": self.seq,
            "bytes_held": sum(s.nbytes() for s in self._all_series()),
            "points_held": self._points_held,
            "series": sum(len(info.series) for info in self._runs.values()),
            "runs": len(self._runs),
            "replay_messages": len(self._log),
            "replay_points": self._log_points,
            "subscribers": len(self._subs),
        }

"""Following a live stream, without I/O: SSE parsing, the reset and restart rules, reconnect policy.

``client.StreamClient.stream`` (``http.client``) and ``astream`` (aiohttp) are two short loops
that perform the :class:`Following` actions (probe, open, re-read, read, sleep, stop) and feed
their outcomes back; every rule lives here once. The rules (see ``client.py``'s docstring for
what a caller sees):

* a dropped connection is reopened with ``Last-Event-ID`` (the last seq seen); the first
  connection is not retried, later ones for up to ``retry_s`` seconds, with backoff;
* before reopening, ``/health`` tells whether the server restarted since we connected (an
  ``uptime_s`` shorter than our connection). A restarted server numbers its messages afresh
  (from the wall clock in µs, above its predecessor's), so the seq we hold cannot resume: it
  is treated like a reset;
* on a reset the missed points are re-read over REST, after the last step yielded per series,
  and stream points at or below what was re-read are then skipped (``Follower``).

Why one module of this length: the SSE parser, the reset and horizon rules and the action policy
are I/O-free and tested as a whole (``tests/test_follow.py``).
"""

from __future__ import annotations

import fnmatch
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from lightning_stream.errors import ClientError

__all__ = ["Action", "Follower", "Following", "StreamPoint", "points_of"]

logger = logging.getLogger("lightning_stream.client")  # the client's: `lightning-stream tail` shows it

StatusCallback = Callable[[dict[str, Any]], None]

# The server sends a keep-alive comment every 15 s by default: a stream silent
# for much longer than that is dead even if the socket looks open.
IDLE_TIMEOUT_S = 60.0
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class StreamPoint:
    """One scalar point as streamed: ``seq`` is the server's sequence number of its batch."""

    run: str
    tag: str
    step: int
    wall_time: float
    value: float
    seq: int


@dataclass(frozen=True)
class Probe:
    """Ask ``/health`` (a server that restarted since we connected cannot resume by seq)."""


@dataclass(frozen=True)
class Open:
    """Open ``/stream`` at ``path`` with ``headers`` (``Last-Event-ID`` when resuming)."""

    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Reread:
    """Re-read what was missed over REST (``follower.reread_targets`` / ``reread_points``)."""


@dataclass(frozen=True)
class Read:
    """Read the next line of the stream, waiting at most ``timeout`` s."""

    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before the next attempt to connect."""

    seconds: float


@dataclass(frozen=True)
class Stop:
    """The duration is over: close and return."""


Action = Probe | Open | Reread | Read | Sleep | Stop
_PROBE, _REREAD, _STOP = Probe(), Reread(), Stop()


class Following:
    """What to do next while following a stream: the I/O-free policy ``stream`` and ``astream`` drive.

    The driver asks :meth:`next` for an :class:`Action`, performs it, and reports the outcome
    (:meth:`probed`, :meth:`opened`, :meth:`failed`, :meth:`line`, :meth:`timed_out`,
    :meth:`dropped`, :meth:`error`); it closes its connection whenever the action is neither
    ``Read`` nor ``Reread``. Points come from :meth:`line` and from the re-read.
    """

    def __init__(self, url: str, follower: Follower, *, duration: float | None, retry_s: float | None) -> None:
        self.url = url
        self.follower = follower
        self.deadline = None if duration is None else time.monotonic() + duration
        self._reconnect = Reconnect(url, retry_s)
        self._open = False
        self._probed = False
        self._then: Action | None = None  # decided by an outcome, returned by the next next()

    def next(self) -> Action:
        then, self._then = self._then, None
        if then is not None:
            return then
        if not self._open:
            if self._reconnect.connected_once and self.follower.last_seq is not None and not self._probed:
                return _PROBE
            return Open(self.follower.path(), self.follower.headers())
        if self.follower.reset_seq is not None:
            return _REREAD
        budget = read_budget(self.deadline)
        return _STOP if budget is None else Read(budget)

    def probed(self, health: dict[str, Any]) -> None:
        self._reconnect.check_restart(self.follower, health)
        self._probed = True

    def opened(self) -> None:
        self._reconnect.connected()
        self._open, self._probed = True, False

    def failed(self, reason: str) -> None:
        """Probing or opening failed: the first connection raises, later ones back off."""
        self._probed = False
        if not self._reconnect.connected_once:
            raise ClientError(reason) from None
        delay = self._reconnect.failed(reason)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            self._then = _STOP
        else:
            self._then = Sleep(delay)

    def line(self, raw: bytes) -> list[StreamPoint]:
        if not raw:
            self.dropped("ended")
            return []
        return self.follower.feed(raw.decode("utf-8", "replace"))

    def timed_out(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._then = _STOP
            return
        logger.info("no data from %s for %.0f s; reconnecting", self.url, IDLE_TIMEOUT_S)
        self._open = False

    def dropped(self, how: str) -> None:
        logger.info("stream from %s %s; reconnecting", self.url, how)
        self._open = False

    def error(self, exc: ClientError) -> None:
        """A re-read failed: reconnect if that may cure it, else raise it."""
        if not transient(exc):
            raise exc
        logger.info("re-reading from %s failed (%s); reconnecting", self.url, exc)
        self._open = False


def points_of(url: str, body: Any) -> list[tuple[int, float, float]]:
    """``(step, wall_time, value)`` rows of an ``/api/scalars`` body."""
    try:
        return [(int(s), float(w), float(v)) for s, w, v in body["points"]]
    except (TypeError, KeyError, ValueError) as exc:
        raise ClientError(f"{url}/api/scalars answered an unexpected body ({exc!r})") from None


class Reconnect:
    """Backoff and give-up policy for reconnecting a live stream."""

    def __init__(self, url: str, retry_s: float | None) -> None:
        self.url = url
        self.retry_s = retry_s
        self.connected_once = False
        self.connected_at = 0.0
        self._failures = 0
        self._first_failure = 0.0

    def connected(self) -> None:
        self.connected_once = True
        self.connected_at = time.monotonic()
        self._failures = 0

    def check_restart(self, follower: Follower, health: dict[str, Any]) -> None:
        """A server younger than our last connection restarted (its hub numbers messages afresh,
        from the wall clock, so ``Last-Event-ID`` cannot resume there): resume as after a reset."""
        uptime = health.get("uptime_s")
        if not isinstance(uptime, (int, float)) or uptime >= time.monotonic() - self.connected_at:
            return
        logger.info("%s restarted (up %.1f s); re-reading what was missed over REST", self.url, uptime)
        seq = health.get("seq")
        follower.last_seq = None
        follower.reset_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0

    def failed(self, reason: str) -> float:
        """Seconds to wait before the next attempt; raises ``ClientError`` past ``retry_s``."""
        now = time.monotonic()
        if self._failures == 0:
            self._first_failure = now
        self._failures += 1
        if self.retry_s is not None and now - self._first_failure > self.retry_s:
            raise ClientError(
                f"lost the stream from {self.url!r} and could not reconnect for {self.retry_s:g} s "
                f"(last error: {reason}); is it still running? (`retry_s`, `tail --retry`: how long to keep trying)"
            )
        delay = _BACKOFF_S[min(self._failures - 1, len(_BACKOFF_S) - 1)]
        logger.info("reconnecting to %s in %.2f s (%s)", self.url, delay, reason)
        return delay


@dataclass
class _SSEEvent:
    event: str
    data: str
    id: str | None


class _SSEParser:
    """Line-by-line Server-Sent Events parser (WHATWG rules that matter here)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> _SSEEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = _SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # keep-alive comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class Follower:
    """The state of one followed stream: filters, last seq, steps yielded, the reset horizon."""

    def __init__(self, run: str, tag: str, since: int | None, on_status: StatusCallback | None) -> None:
        if not isinstance(run, str) or not isinstance(tag, str):
            raise TypeError(f"run={run!r} and tag={tag!r} must be glob strings, e.g. '*' or 'train/*'")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"since={since!r} must be a sequence number >= 0 (StreamPoint.seq) or None")
        self.run_glob = run
        self.tag_glob = tag
        self.last_seq = since
        self.on_status = on_status
        self.started_wall = time.time()
        self.reset_seq: int | None = None
        self._parser = _SSEParser()
        self._last_step: dict[tuple[str, str], int] = {}
        self._horizon: dict[tuple[str, str], int] = {}

    def path(self) -> str:
        query = {k: v for k, v in (("run", self.run_glob), ("tag", self.tag_glob)) if v != "*"}
        query["format"] = "columns"  # a third of the bytes of point objects; an older server sends points
        return "/stream?" + urllib.parse.urlencode(query)

    def headers(self) -> dict[str, str]:
        return {} if self.last_seq is None else {"Last-Event-ID": str(self.last_seq)}

    def feed(self, line: str) -> list[StreamPoint]:
        event = self._parser.feed(line)
        if event is None:
            return []
        seq = self.last_seq
        if event.id is not None and event.id.isdigit():
            seq = int(event.id)
        try:
            data = orjson.loads(event.data)
        except ValueError:
            logger.warning("ignoring a %r event whose data is not JSON: %.200r", event.event, event.data)
            return []
        points: list[StreamPoint] = []
        if event.event == "scalars":
            points = self._scalars(data, seq if seq is not None else 0)
        elif event.event == "status":
            if self.on_status is not None and isinstance(data, dict):
                self.on_status(data)
        elif event.event == "reset" and isinstance(data, dict) and "tag" in data:
            self._rewind(data)  # one series went back: its new points follow in the stream
        elif event.event == "reset":
            reset_seq = data.get("seq") if isinstance(data, dict) else None
            if isinstance(reset_seq, int):
                seq = reset_seq
            self.reset_seq = seq if seq is not None else 0
        if seq is not None:
            self.last_seq = seq
        return points

    def _rewind(self, data: dict[str, Any]) -> None:
        """A series reset (``run``, ``tag``, ``from_step``): its steps from ``from_step`` on are new again."""
        try:
            key, step = (str(data["run"]), str(data["tag"])), int(data["from_step"])
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed series reset: %.200r", data)
            return
        self._horizon.pop(key, None)
        if key in self._last_step:
            self._last_step[key] = min(self._last_step[key], step - 1)

    def _scalars(self, data: Any, seq: int) -> list[StreamPoint]:
        points: list[StreamPoint] = []
        if not isinstance(data, dict):
            return points
        for point in _columns(data.get("series", ()), seq) if "series" in data else _objects(data.get("points"), seq):
            key = (point.run, point.tag)
            horizon = self._horizon.get(key)
            if horizon is not None:
                if point.step <= horizon:
                    continue  # the reset's re-read already yielded it
                del self._horizon[key]
            self._last_step[key] = point.step
            points.append(point)
        return points

    def reread_targets(self, runs: Any) -> list[tuple[str, str, int | None]]:
        """``(run, tag, since_step)`` for every matching series in an ``/api/runs`` answer.

        Also arms the duplicate filter: until a series passes the last step yielded
        for it, stream points at or below that step are old news (a restarted server
        broadcasts its re-read history, possibly after answering REST).
        """
        for key, step in self._last_step.items():
            self._horizon[key] = max(step, self._horizon.get(key, step))
        targets: list[tuple[str, str, int | None]] = []
        for entry in runs if isinstance(runs, list) else ():
            if not isinstance(entry, dict):
                continue
            run = str(entry.get("run", ""))
            if not fnmatch.fnmatchcase(run, self.run_glob):
                continue
            for tag in entry.get("tags") or ():
                if isinstance(tag, str) and fnmatch.fnmatchcase(tag, self.tag_glob):
                    targets.append((run, tag, self._last_step.get((run, tag))))
        return targets

    def reread_points(self, run: str, tag: str, points: list[tuple[int, float, float]]) -> list[StreamPoint]:
        key = (run, tag)
        seen = key in self._last_step
        seq = self.reset_seq if self.reset_seq is not None else 0
        out = [
            StreamPoint(run, tag, step, wall, value, seq)
            for step, wall, value in points
            if seen or wall >= self.started_wall
        ]
        if out:
            self._last_step[key] = out[-1].step
        if points:  # every step REST returned, yielded or not, is held by the server already
            top = max(step for step, _, _ in points)
            self._horizon[key] = max(top, self._horizon.get(key, top))
        return out


def _objects(items: Any, seq: int) -> Iterator[StreamPoint]:
    """Points of a ``{"points": [...]}`` frame (the SPEC's default form; a server without columns)."""
    for item in items if isinstance(items, list) else ():
        try:
            yield StreamPoint(
                str(item["run"]),
                str(item["tag"]),
                int(item["step"]),
                float(item["wall_time"]),
                float(item["value"]),
                seq,
            )
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed point: %.200r", item)


def _columns(entries: Any, seq: int) -> Iterator[StreamPoint]:
    """Points of a ``format=columns`` frame: ``{"series": [{"run","tag","steps","wall_times","values"}]}``.

    Non-finite values arrive as the strings ``"NaN"``/``"Infinity"``/``"-Infinity"``; ``float`` reads them.
    """
    for entry in entries if isinstance(entries, list) else ():
        try:
            run, tag = str(entry["run"]), str(entry["tag"])
            steps, walls, values = entry["steps"], entry["wall_times"], entry["values"]
            if not (len(steps) == len(walls) == len(values)):
                raise ValueError("columns of different lengths")
            rows = [(int(s), float(w), float(v)) for s, w, v in zip(steps, walls, values, strict=True)]
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring a malformed series entry: %.200r", entry)
            continue
        for step, wall, value in rows:
            yield StreamPoint(run, tag, step, wall, value, seq)


def transient(exc: ClientError) -> bool:
    """A failure a reconnect may cure: no answer at all, or a 5xx."""
    return exc.status is None or exc.status >= 500


def read_budget(deadline: float | None) -> float | None:
    """How long the next read may wait: the idle timeout, cut to the deadline; None once it passed."""
    if deadline is None:
        return IDLE_TIMEOUT_S
    remaining = deadline - time.monotonic()
    return min(IDLE_TIMEOUT_S, remaining) if remaining > 0 else None

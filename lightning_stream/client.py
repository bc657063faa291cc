"""A client for a lightning-stream server: REST queries and live points.

``StreamClient(url)`` wraps the HTTP contract (``/health``, ``/api/runs``,
``/api/scalars``, ``/stream``). The sync methods use only the standard library
(``http.client``) and ``orjson``, so importing this module is fast and pulls in neither torch
nor aiohttp; ``astream`` imports aiohttp when first called. Live points are asked for in the
columnar form (``/stream?format=columns``); a server that sends point objects is read as well.

Live iteration (``stream`` and ``astream``) yields one ``StreamPoint`` per point:

* a dropped connection (server restart, network blip) is reopened with
  ``Last-Event-ID`` set to the last sequence number seen, so the server replays
  exactly what was missed; the first connection is not retried (a wrong URL
  fails at once), later ones for up to ``retry_s`` seconds;
* a server that restarted meanwhile (``/health`` ``uptime_s`` shorter than our
  connection: its sequence numbers started over, so ``Last-Event-ID`` would
  replay the wrong messages) is treated like a reset, below;
* on ``event: reset`` (the server no longer holds what was missed, or this
  client fell too far behind) the iterator re-reads over REST, for every series
  matching the filters, the points after the last step it yielded for that
  series (for a series it has not yielded yet: the points written since the
  iterator started, by wall time). Those points come out in step order with
  ``seq`` set to the reset's sequence number; afterwards, stream points of a
  series at or below the highest step already yielded or re-read for it are
  skipped, until the series passes that step.

A series that goes back (a run resumed from a checkpoint into the same log dir)
arrives as ``event: reset`` with ``run``, ``tag`` and ``from_step``: no re-read, the
rewritten points follow in the stream and are yielded (their steps go back).

Limits: a series that is purged back exactly while a reset is handled may lose
those rewritten points; a later point of the series clears the condition.
"""

from __future__ import annotations

import asyncio
import fnmatch
import http.client
import json
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lightning_stream.config import ENV_TOKEN
from lightning_stream.errors import ClientError, NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import aiohttp

__all__ = ["StreamClient", "StreamPoint"]

logger = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]

# The server sends a keep-alive comment every 15 s by default: a stream silent
# for much longer than that is dead even if the socket looks open.
_IDLE_TIMEOUT_S = 60.0
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_LS_HINT = "is the server running? `lightning-stream ls` lists live servers"


@dataclass(frozen=True, slots=True)
class StreamPoint:
    """One scalar point as streamed: ``seq`` is the server's sequence number of its batch."""

    run: str
    tag: str
    step: int
    wall_time: float
    value: float
    seq: int


class StreamClient:
    """Talks to one lightning-stream server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:6007`` (a path prefix
            such as a Jupyter proxy ``https://hub/user/me/proxy/6007/`` is kept);
            ``host:port`` without a scheme means ``http://``.
        token: bearer token for servers bound off loopback; defaults to
            ``$LIGHTNING_STREAM_TOKEN``.
        timeout: seconds allowed to connect and to answer a REST request.

    Example::

        client = StreamClient("http://127.0.0.1:6007")
        for point in client.stream(tag="train/*"):
            print(point.run, point.tag, point.step, point.value)
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"url={url!r} is not a server URL; pass e.g. 'http://127.0.0.1:6007'")
        url = url.strip()
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url={url!r} is not an http(s) URL; pass e.g. 'http://127.0.0.1:6007'")
        try:
            parts.port  # noqa: B018 - validates the port number
        except ValueError:
            raise ValueError(f"url={url!r} has a bad port; use 1..65535") from None
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self.token = token if token is not None else (os.environ.get(ENV_TOKEN) or None)
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"StreamClient({self.url!r})"

    # ------------------------------------------------------------------ REST

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` JSON (``status``, ``version``, ``pid``, ``runs``, ...)."""
        result = self._get_json("/health")
        if not isinstance(result, dict):
            raise ClientError(
                f"{self.url}/health answered {result!r}, not a JSON object; is this a lightning-stream server?"
            )
        return result

    def runs(self) -> list[dict[str, Any]]:
        """Runs the server knows: ``run``, ``logdir``, ``tags``, ``last_step``, ``last_wall_time``."""
        result = self._get_json("/api/runs")
        if not isinstance(result, list):
            raise ClientError(f"{self.url}/api/runs answered {result!r}, not a JSON list")
        return result

    def scalars(
        self, run: str, tag: str, since_step: int | None = None, limit: int | None = None
    ) -> list[tuple[int, float, float]]:
        """Points of one series as ``(step, wall_time, value)`` in step order.

        ``since_step`` keeps points with a larger step; ``limit`` the first N of them.
        Raises ``NotFoundError`` for an unknown run or tag.
        """
        query: dict[str, Any] = {"run": run, "tag": tag}
        if since_step is not None:
            query["since_step"] = int(since_step)
        if limit is not None:
            query["limit"] = int(limit)
        result = self._get_json("/api/scalars?" + urllib.parse.urlencode(query))
        try:
            return [(int(s), float(w), float(v)) for s, w, v in result["points"]]
        except (TypeError, KeyError, ValueError) as exc:
            raise ClientError(f"{self.url}/api/scalars answered an unexpected body ({exc!r})") from None

    # ------------------------------------------------------------ live, sync

    def stream(
        self,
        run: str = "*",
        tag: str = "*",
        *,
        since: int | None = None,
        duration: float | None = None,
        retry_s: float | None = 30.0,
        on_status: StatusCallback | None = None,
    ) -> Generator[StreamPoint, None, None]:
        """Yield live points of runs/tags matching the globs, reconnecting as needed.

        Args:
            run, tag: ``fnmatch`` globs, filtered by the server.
            since: resume after this sequence number (``StreamPoint.seq``); ``None`` = from now.
            duration: stop (return) after this many seconds; ``None`` = until closed.
            retry_s: how long to keep reconnecting after a drop before raising
                ``ClientError``; ``None`` = forever.
            on_status: called with each run-lifecycle message (``{"run", "state", ...}``).

        After a ``reset`` (or a server restart) the points missed are re-read over REST
        and yielded first, in step order per series, with ``seq`` set to the reset's
        sequence number; see the module docstring. Closing the generator (``break``,
        ``.close()``) closes the connection.

        Raises:
            ClientError: the first connection failed (wrong URL, server down, bad token),
                or reconnecting failed for ``retry_s`` seconds.
        """
        follower = _Follower(run, tag, since, on_status)
        deadline = None if duration is None else time.monotonic() + duration
        reconnect = _Reconnect(self.url, retry_s)
        while True:
            try:
                if reconnect.connected_once and follower.last_seq is not None:
                    reconnect.check_restart(follower, self._health_or_retry())
                conn, response = self._open_stream(follower)
            except _Retryable as exc:
                if not reconnect.connected_once:
                    raise ClientError(str(exc)) from None
                delay = reconnect.failed(str(exc))
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return
                time.sleep(delay)
                continue
            reconnect.connected()
            try:
                while True:
                    if follower.reset_seq is not None:
                        try:
                            yield from self._reread(follower)
                        except ClientError as exc:
                            if not _transient(exc):
                                raise
                            logger.info("re-reading from %s failed (%s); reconnecting", self.url, exc)
                            break
                    sock_timeout = _read_budget(deadline)
                    if sock_timeout is None:
                        return
                    if conn.sock is not None:
                        conn.sock.settimeout(sock_timeout)
                    try:
                        raw = response.readline()
                    except TimeoutError:
                        if deadline is not None and time.monotonic() >= deadline:
                            return
                        logger.info("no data from %s for %.0f s; reconnecting", self.url, _IDLE_TIMEOUT_S)
                        break
                    except (OSError, http.client.HTTPException) as exc:
                        logger.info("stream from %s dropped (%r); reconnecting", self.url, exc)
                        break
                    if not raw:
                        logger.info("stream from %s ended; reconnecting", self.url)
                        break
                    yield from follower.feed(raw.decode("utf-8", "replace"))
            finally:
                response.close()
                conn.close()

    def _open_stream(self, follower: _Follower) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection(self.timeout)
        try:
            conn.request("GET", self._prefix + follower.path(), headers=self._headers(follower.headers()))
            # keep the socket: http.client drops conn.sock when the response owns it
            sock = conn.sock
            response = conn.getresponse()
            conn.sock = sock
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Retryable(f"cannot reach {self.url!r} ({exc}); {_LS_HINT}") from None
        if response.status != 200:
            body = response.read()
            response.close()
            conn.close()
            if response.status >= 500:
                raise _Retryable(f"{self.url}/stream answered HTTP {response.status}")
            raise _http_error(self.url + "/stream", response.status, body)
        return conn, response

    def _health_or_retry(self) -> dict[str, Any]:
        try:
            return self.health()
        except ClientError as exc:
            raise _Retryable(str(exc)) from None

    def _reread(self, follower: _Follower) -> Iterator[StreamPoint]:
        """The points missed before a reset, over REST; ``reset_seq`` is cleared once done
        (a failure leaves it set, so the re-read is repeated after reconnecting)."""
        for run, tag, since_step in follower.reread_targets(self.runs()):
            try:
                points = self.scalars(run, tag, since_step=since_step)
            except NotFoundError:
                continue
            yield from follower.reread_points(run, tag, points)
        follower.reset_seq = None

    # ----------------------------------------------------------- live, async

    async def astream(
        self,
        run: str = "*",
        tag: str = "*",
        *,
        since: int | None = None,
        duration: float | None = None,
        retry_s: float | None = 30.0,
        on_status: StatusCallback | None = None,
    ) -> AsyncGenerator[StreamPoint, None]:
        """``async for`` version of ``stream`` (same arguments and behaviour), over aiohttp."""
        import aiohttp

        follower = _Follower(run, tag, since, on_status)
        deadline = None if duration is None else time.monotonic() + duration
        reconnect = _Reconnect(self.url, retry_s)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    if reconnect.connected_once and follower.last_seq is not None:
                        reconnect.check_restart(follower, await self._ahealth_or_retry(session))
                    response = await self._aopen_stream(session, follower)
                except _Retryable as exc:
                    if not reconnect.connected_once:
                        raise ClientError(str(exc)) from None
                    delay = reconnect.failed(str(exc))
                    if deadline is not None and time.monotonic() + delay >= deadline:
                        return
                    await asyncio.sleep(delay)
                    continue
                reconnect.connected()
                async with response:
                    pending = bytearray()
                    while True:
                        if follower.reset_seq is not None:
                            try:
                                async for point in self._areread(session, follower):
                                    yield point
                            except ClientError as exc:
                                if not _transient(exc):
                                    raise
                                logger.info("re-reading from %s failed (%s); reconnecting", self.url, exc)
                                break
                        wait = _read_budget(deadline)
                        if wait is None:
                            return
                        try:
                            raw = await asyncio.wait_for(_read_line(response.content, pending), wait)
                        except asyncio.TimeoutError:
                            if deadline is not None and time.monotonic() >= deadline:
                                return
                            logger.info("no data from %s for %.0f s; reconnecting", self.url, _IDLE_TIMEOUT_S)
                            break
                        except (aiohttp.ClientError, OSError) as exc:
                            logger.info("stream from %s dropped (%r); reconnecting", self.url, exc)
                            break
                        if not raw:
                            logger.info("stream from %s ended; reconnecting", self.url)
                            break
                        for point in follower.feed(raw.decode("utf-8", "replace")):
                            yield point

    async def _aopen_stream(self, session: aiohttp.ClientSession, follower: _Follower) -> aiohttp.ClientResponse:
        import aiohttp

        try:
            response = await session.get(self.url + follower.path(), headers=self._headers(follower.headers()))
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise _Retryable(f"cannot reach {self.url!r} ({exc!r}); {_LS_HINT}") from None
        if response.status >= 500:
            response.release()
            raise _Retryable(f"{self.url}/stream answered HTTP {response.status}")
        if response.status != 200:
            body = await response.read()
            response.release()
            raise _http_error(self.url + "/stream", response.status, body)
        return response

    async def _aget_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        import aiohttp

        url = self.url + path
        try:
            async with session.get(
                url, headers=self._headers({}), timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise ClientError(f"cannot reach {url!r} ({exc!r}); {_LS_HINT}") from None
        return _decode(url, status, body)

    async def _ahealth_or_retry(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        try:
            health = await self._aget_json(session, "/health")
        except ClientError as exc:
            raise _Retryable(str(exc)) from None
        return health if isinstance(health, dict) else {}

    async def _areread(self, session: aiohttp.ClientSession, follower: _Follower) -> AsyncIterator[StreamPoint]:
        runs = await self._aget_json(session, "/api/runs")
        for run, tag, since_step in follower.reread_targets(runs):
            query: dict[str, Any] = {"run": run, "tag": tag}
            if since_step is not None:
                query["since_step"] = since_step
            try:
                body = await self._aget_json(session, "/api/scalars?" + urllib.parse.urlencode(query))
            except NotFoundError:
                continue
            try:
                points = [(int(s), float(w), float(v)) for s, w, v in body["points"]]
            except (TypeError, KeyError, ValueError) as exc:
                raise ClientError(f"{self.url}/api/scalars answered an unexpected body ({exc!r})") from None
            for point in follower.reread_points(run, tag, points):
                yield point
        follower.reset_seq = None

    # -------------------------------------------------------------- plumbing

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "User-Agent": "lightning-stream-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra)
        return headers

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        host = self._parts.hostname or "127.0.0.1"
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(host, self._parts.port, timeout=timeout)
        return http.client.HTTPConnection(host, self._parts.port, timeout=timeout)

    def _get_json(self, path: str) -> Any:
        url = self.url + path
        conn = self._connection(self.timeout)
        try:
            conn.request("GET", self._prefix + path, headers=self._headers({}))
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"cannot reach {url!r} ({exc}); {_LS_HINT}") from None
        finally:
            conn.close()
        return _decode(url, response.status, body)


class _Retryable(Exception):
    """A connection attempt failed in a way a later attempt may not."""


class _Reconnect:
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

    def check_restart(self, follower: _Follower, health: dict[str, Any]) -> None:
        """A server younger than our last connection restarted (its seqs started over, so
        ``Last-Event-ID`` would replay the wrong messages): resume as after a reset."""
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


class _Follower:
    """Sans-IO core of live iteration, shared by ``stream`` and ``astream``."""

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


def _transient(exc: ClientError) -> bool:
    """A failure a reconnect may cure: no answer at all, or a 5xx."""
    return exc.status is None or exc.status >= 500


def _decode(url: str, status: int, body: bytes) -> Any:
    if status != 200:
        raise _http_error(url, status, body)
    try:
        return orjson.loads(body)
    except ValueError:
        raise ClientError(
            f"{url} answered HTTP 200 with a body that is not JSON ({body[:80]!r}); is this a lightning-stream server?",
            status=status,
        ) from None


def _http_error(url: str, status: int, body: bytes) -> ClientError:
    message = body[:300].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or parsed.get("error") or message)
    except ValueError:
        pass
    if status == 404:
        hint = "" if message else "; list what exists with StreamClient.runs()"
        return NotFoundError(f"{url} answered 404: {message}{hint}", status=status)
    if status in (401, 403):
        return ClientError(
            f"{url} answered {status}: {message}; pass token=... (or set {ENV_TOKEN}) with the server's token",
            status=status,
        )
    return ClientError(f"{url} answered HTTP {status}: {message}", status=status)


async def _read_line(content: Any, pending: bytearray) -> bytes:
    """The next line (with its ``\n``) of an SSE body; ``b""`` at its end.

    Not ``StreamReader.readline()``: that raises ``LineTooLong`` past aiohttp's line limit,
    and one ``data:`` line of a large batch can be longer.
    """
    while True:
        end = pending.find(b"\n")
        if end >= 0:
            line = bytes(pending[: end + 1])
            del pending[: end + 1]
            return line
        chunk = await content.readany()
        if not chunk:
            line = bytes(pending)
            pending.clear()
            return line
        pending.extend(chunk)


def _read_budget(deadline: float | None) -> float | None:
    """How long the next read may wait: the idle timeout, cut to the deadline; None once it passed."""
    if deadline is None:
        return _IDLE_TIMEOUT_S
    remaining = deadline - time.monotonic()
    return min(_IDLE_TIMEOUT_S, remaining) if remaining > 0 else None

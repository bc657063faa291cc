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
  connection: it numbers its messages afresh, from the wall clock, so
  ``Last-Event-ID`` cannot resume there) is treated like a reset, below;
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

How: ``follow.py`` holds every rule, I/O-free (``Following`` says what to do next:
probe, open, re-read, read, sleep, stop); ``stream`` and ``astream`` are two short loops
that do it, one with ``http.client``, one with aiohttp.

Limits: a series that is purged back exactly while a reset is handled may lose
those rewritten points; a later point of the series clears the condition.

Why one module of this length: the REST methods and the two drive loops (sync, async) with their
I/O helpers; every rule of following a stream is ``follow.py``'s.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from lightning_stream.config import ENV_TOKEN
from lightning_stream.errors import ClientError, NotFoundError
from lightning_stream.follow import (
    Follower,
    Following,
    Open,
    Probe,
    Read,
    Reread,
    Sleep,
    StatusCallback,
    Stop,
    StreamPoint,
    points_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import aiohttp

__all__ = ["StreamClient", "StreamPoint"]

logger = logging.getLogger(__name__)

_LS_HINT = "is the server running? `lightning-stream ls` lists live servers"


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
        return points_of(self.url, self._get_json("/api/scalars?" + urllib.parse.urlencode(query)))

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
        following = Following(self.url, Follower(run, tag, since, on_status), duration=duration, retry_s=retry_s)
        conn: http.client.HTTPConnection | None = None
        response: http.client.HTTPResponse | None = None
        try:
            while True:
                action = following.next()
                if conn is not None and response is not None and not isinstance(action, (Read, Reread)):
                    response.close()
                    conn.close()
                    conn = response = None
                raw = None
                try:
                    if isinstance(action, Stop):
                        return
                    if isinstance(action, Sleep):
                        time.sleep(action.seconds)
                    elif isinstance(action, Probe):
                        following.probed(self._health_or_retry())
                    elif isinstance(action, Open):
                        conn, response = self._open_stream(action.path, action.headers)
                        following.opened()
                    elif isinstance(action, Reread):
                        yield from self._reread(following.follower)
                    elif conn is not None and response is not None:
                        if conn.sock is not None:
                            conn.sock.settimeout(action.timeout)
                        raw = response.readline()
                except _Retryable as exc:
                    following.failed(str(exc))
                except TimeoutError:
                    following.timed_out()
                except (OSError, http.client.HTTPException) as exc:
                    following.dropped(f"dropped ({exc!r})")
                except ClientError as exc:
                    following.error(exc)
                if raw is not None:
                    yield from following.line(raw)
        finally:
            if conn is not None and response is not None:
                response.close()
                conn.close()

    def _open_stream(
        self, path: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection(self.timeout)
        try:
            conn.request("GET", self._prefix + path, headers=self._headers(headers))
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

    def _reread(self, follower: Follower) -> Iterator[StreamPoint]:
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

        following = Following(self.url, Follower(run, tag, since, on_status), duration=duration, retry_s=retry_s)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        response: aiohttp.ClientResponse | None = None
        pending = bytearray()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    action = following.next()
                    if response is not None and not isinstance(action, (Read, Reread)):
                        response.release()
                        response = None
                    raw = None
                    try:
                        if isinstance(action, Stop):
                            return
                        if isinstance(action, Sleep):
                            await asyncio.sleep(action.seconds)
                        elif isinstance(action, Probe):
                            following.probed(await self._ahealth_or_retry(session))
                        elif isinstance(action, Open):
                            response = await self._aopen_stream(session, action.path, action.headers)
                            pending.clear()
                            following.opened()
                        elif isinstance(action, Reread):
                            async for point in self._areread(session, following.follower):
                                yield point
                        elif response is not None:
                            raw = await asyncio.wait_for(_read_line(response.content, pending), action.timeout)
                    except _Retryable as exc:
                        following.failed(str(exc))
                    except asyncio.TimeoutError:
                        following.timed_out()
                    except (aiohttp.ClientError, OSError) as exc:
                        following.dropped(f"dropped ({exc!r})")
                    except ClientError as exc:
                        following.error(exc)
                    for point in following.line(raw) if raw is not None else ():
                        yield point
            finally:
                if response is not None:
                    response.release()

    async def _aopen_stream(
        self, session: aiohttp.ClientSession, path: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        import aiohttp

        try:
            response = await session.get(self.url + path, headers=self._headers(headers))
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

    async def _areread(self, session: aiohttp.ClientSession, follower: Follower) -> AsyncIterator[StreamPoint]:
        runs = await self._aget_json(session, "/api/runs")
        for run, tag, since_step in follower.reread_targets(runs):
            query: dict[str, Any] = {"run": run, "tag": tag}
            if since_step is not None:
                query["since_step"] = since_step
            try:
                body = await self._aget_json(session, "/api/scalars?" + urllib.parse.urlencode(query))
            except NotFoundError:
                continue
            for point in follower.reread_points(run, tag, points_of(self.url, body)):
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

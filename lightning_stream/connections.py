"""Bounded connections: a cap on concurrent clients, answered 503 past it, and a quiet accept log.

Descriptors are what a crowd of connections (silent TCP sockets from another local user,
hundreds of dashboards) exhausts first. Without a bound, ``accept()`` then fails with
``EMFILE``, asyncio logs each failure with a traceback once a second, and the health
probe cannot open its own socket, so the watchdog restarted a server that was only full.
So (docs/security.md):

* ``CappedSockSite`` serves at most ``max_clients`` connections; a connection past the
  cap is answered ``503`` with ``Retry-After`` and closed at once, holding a descriptor
  only while that short answer is written. The default cap is half the soft
  ``RLIMIT_NOFILE`` (``default_max_clients``): the other half stays for event files,
  inotify, the loop and the health probe.
* A connection that has not sent a whole request line and headers within
  ``header_timeout_s`` of connecting is closed (the slow or silent client); so is one
  idle that long after an answer (aiohttp's ``keepalive_timeout``, which aiohttp 3.14.5
  also starts at ``connection_made``, aio-libs/aiohttp#13681; the first-request timer
  here covers the older aiohttp this package supports). A request being answered (an
  SSE stream, a WebSocket) is exempt.
* ``quiet_accept_errors`` makes the loop log "out of system resource" accept errors at
  most once per ``ACCEPT_LOG_INTERVAL_S``, one line, with the number left out.

Limits: the cap bounds connections, not users; another local user can still take
every slot (each for at most ``header_timeout_s`` when silent). Binding loopback and a
token are what keep them from reading anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from lightning_stream.logs import redact
from lightning_stream.security import json_error

logger = logging.getLogger(__name__)

ACCEPT_LOG_INTERVAL_S = 60.0
RETRY_AFTER_S = 5
REFUSAL_LINGER_S = 0.25
MAX_DEFAULT_CLIENTS = 10_000
_ACCEPT_ERROR = "out of system resource"  # asyncio's message for EMFILE/ENFILE/ENOBUFS/ENOMEM on accept


def default_max_clients() -> int:
    """Half the soft descriptor limit (at least 8, at most ``MAX_DEFAULT_CLIENTS``)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no RLIMIT_NOFILE; sockets are not CRT descriptors there
        return 1000
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DEFAULT_CLIENTS
    return max(8, min(soft // 2, MAX_DEFAULT_CLIENTS))


def _busy_answer(max_clients: int) -> bytes:
    body = json.dumps(
        {
            "error": f"this server is at its limit of {max_clients} connections; retry in {RETRY_AFTER_S} s "
            "(the operator can raise max_clients, or the descriptor limit: ulimit -n)"
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refusal(asyncio.Protocol):
    """Answers one connection past the cap with 503 and closes it, holding it ``REFUSAL_LINGER_S`` at most.

    The write side is shut first and the request (if any) read and dropped: closing a
    socket with unread input sends a reset, which could destroy the 503 before the
    client reads it.
    """

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        try:
            transport.write(self._answer)
            if transport.can_write_eof():
                transport.write_eof()
        except OSError:  # the client is gone already (ENOTCONN): nothing to answer
            transport.close()
            return
        self._closer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: the answer does not depend on it

    def eof_received(self) -> bool:
        return False  # the client is done too: let the transport close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closer is not None:
            self._closer.cancel()


class CappedSockSite(web.SockSite):
    """``web.SockSite`` that serves at most ``max_clients`` connections at once (503 past it)."""

    def __init__(
        self, runner: web.BaseRunner, sock: Any, *, max_clients: int, header_timeout_s: float, **kw: Any
    ) -> None:
        super().__init__(runner, sock, **kw)
        self.max_clients = max_clients
        self.header_timeout_s = header_timeout_s
        self.refused = 0
        self._answer = _busy_answer(max_clients)
        # Handlers made and not yet lost. Counted here, not in aiohttp's server.connections: a burst of
        # accepts runs the factory for every one before any connection_made registers there.
        self._open: weakref.WeakSet[RequestHandler] = weakref.WeakSet()

    async def start(self) -> None:
        # SockSite.start minus its create_server (so BaseSite.start registers us), then ours
        # with a factory that counts: same private attributes as SockSite uses (aiohttp 3.9-3.14).
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.BaseProtocol:
            if max(len(self._open), len(server.connections)) >= self.max_clients:
                self.refused += 1
                return _Refusal(self._answer)
            handler = _handler(server, self._open)
            self._open.add(handler)
            loop.call_later(self.header_timeout_s, _close_without_request, weakref.ref(handler))
            return handler

        self._server = await loop.create_server(factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)


class _Handler(RequestHandler):
    """aiohttp's request handler, answering malformed requests our way.

    aiohttp answers a request its parser rejects with a text body that quotes the bad
    line (``?token=...`` included) and logs it with a traceback at ERROR, so any local
    client could fill the log. Here: ``{"error": ...}`` with the first line of the
    reason, token redacted, and one DEBUG line. Server errors (5xx) stay aiohttp's.
    """

    __slots__ = ("__weakref__", "_counted_in")
    _counted_in: weakref.WeakSet[RequestHandler]

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._counted_in.discard(self)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        first = message.strip().splitlines()[0].rstrip(": ") if message and message.strip() else str(status)
        reason = redact(first)
        logger.debug("bad HTTP request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the bad request")
        response = json_error(status, f"bad HTTP request: {reason}; send a well-formed HTTP/1.1 request")
        response.force_close()
        return response


def _handler(server: web.Server, counted_in: weakref.WeakSet[RequestHandler]) -> RequestHandler:
    """``server()`` as a ``_Handler`` that leaves ``counted_in`` when its connection ends.

    aiohttp's own handler if its private ``_kwargs``/``_loop`` ever change (the cap then
    counts ``server.connections`` only).
    """
    try:
        handler = _Handler(server, loop=server._loop, **server._kwargs)
    except (AttributeError, TypeError):  # pragma: no cover - another aiohttp layout
        return server()
    handler._counted_in = counted_in
    return handler


def _close_without_request(ref: weakref.ref[RequestHandler]) -> None:
    """Close a connection that has not sent one whole request yet (aiohttp counts parsed requests)."""
    handler = ref()
    if handler is not None and getattr(handler, "_request_count", 1) == 0 and handler.transport is not None:
        handler.force_close()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's accept errors at most once per ``ACCEPT_LOG_INTERVAL_S``; others as before."""
    state: dict[str, float] = {"last": -ACCEPT_LOG_INTERVAL_S, "skipped": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _ACCEPT_ERROR not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - state["last"] < ACCEPT_LOG_INTERVAL_S:
            state["skipped"] += 1
            return
        skipped, state["last"], state["skipped"] = state["skipped"], now, 0
        logger.error(
            "lightning-stream cannot accept connections: %s (%d more like it not logged); "
            "too many open descriptors: lower max_clients or raise the limit (ulimit -n)",
            context.get("exception"),
            skipped,
        )

    loop.set_exception_handler(handler)

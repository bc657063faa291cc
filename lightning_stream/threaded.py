"""The thread backend: a stream server on an asyncio loop in a daemon thread of this process.

``StreamServer`` holds one of these (or a child-process backend, ``isolated.py``) and
keeps the state machine, the watched logdirs, the registry entry and the supervisor;
this module only serves. Each start creates a fresh *incarnation* (loop, thread, socket,
hub, runner); ``restart()`` replaces it whole on the same port and re-reads the watched
logdirs (from the server's ``watches()``), so points sent with ``publish()`` before a
restart are lost, and the new hub numbers its messages from the wall clock, above the old
ones (``hub.py``: a client resuming with an old seq gets ``reset``).

The watched logdirs of an incarnation, nested ones included, are ``logdirs.py``'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lightning_stream.app import AppState, create_app
from lightning_stream.config import ServerConfig
from lightning_stream.connections import CappedSockSite, default_max_clients, quiet_accept_errors
from lightning_stream.errors import PortInUseError, ServerNotRunningError, ServerStartError
from lightning_stream.health import health_check
from lightning_stream.hub import Hub
from lightning_stream.logdirs import LogdirWatches, cancel_task
from lightning_stream.looplag import LoopLagMonitor
from lightning_stream.ports import BoundSocket, bind_listener, bind_server_socket, is_in_use
from lightning_stream.scalars import ScalarBatch
from lightning_stream.threads import start_thread

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # generous: a loaded 2-core CI box
STOP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 3.0  # handlers still running after on_shutdown get this long
CALL_TIMEOUT_S = 60.0  # longest a caller's thread waits on the server loop (watch's first scan included)
HEALTH_TRIES = 3
STATUS = object()  # marks a status item in the publish deque


@dataclass(eq=False)
class _Incarnation:
    """Everything one run of the server thread owns; replaced whole on restart."""

    loop: asyncio.AbstractEventLoop
    sock: socket.socket
    port: int
    thread: threading.Thread | None = None
    hub: Hub | None = None
    runner: web.AppRunner | None = None
    loop_lag: LoopLagMonitor | None = None
    logdirs: LogdirWatches | None = None
    torn_down: bool = False


class ThreadBackend:
    """Serve from a loop thread of this process; see the module docstring.

    Args:
        config: the server's configuration.
        watches: the server's watched logdirs (logdir -> prefix), re-read by a new incarnation.
        restarts: the server's restart count, for ``/health`` and ``/metrics``.
    """

    in_process = True  # the registry entry, the supervisor and /health's pid are this process's

    def __init__(
        self,
        config: ServerConfig,
        *,
        watches: Callable[[], Mapping[str, str | None]],
        restarts: Callable[[], int],
    ) -> None:
        self._config = config
        self._watches = watches
        self._restarts = restarts
        self._inc: _Incarnation | None = None
        self._bound: BoundSocket | None = None
        self._pending: deque[tuple[Any, ...]] = deque()
        self._wake_scheduled = False
        self.pid = os.getpid()

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def port(self) -> int | None:
        return self._bound.port if self._bound is not None else None

    @property
    def fallback_message(self) -> str:
        return self._bound.message if self._bound is not None else ""

    def start(self) -> None:
        """Bind (falling back to a free port unless strict), serve; returns once ``/health`` answers."""
        bound = bind_server_socket(self.host, self._config.port, strict=self._config.strict_port)
        self._bound = bound
        self._launch(bound.sock, bound.port)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        inc, self._inc = self._inc, None
        if inc is not None:
            self._shutdown_incarnation(inc, timeout=timeout)

    def alive(self) -> bool:
        inc = self._inc
        return inc is not None and inc.thread is not None and inc.thread.is_alive() and inc.loop.is_running()

    def require(self, what: str) -> None:
        """Raise ``ServerNotRunningError`` unless the loop serves (not between two incarnations)."""
        if self._inc is None:
            raise ServerNotRunningError(f"cannot {what}: the server is restarting; try again in a moment")

    def watch(self, path: str, prefix: str | None) -> str:
        """Watch ``path`` on the loop; returns after its first scan, with the run name of ``path``."""
        inc = self._inc
        if inc is None:
            raise ServerNotRunningError(f"cannot watch {path!r}: the server is restarting; try again in a moment")
        assert inc.logdirs is not None
        name: str = self._call(inc, inc.logdirs.watch(path, prefix))
        return name

    def unwatch(self, path: str) -> None:
        """Stop watching ``path`` (reading what was flushed last), if the loop still runs."""
        inc = self._inc
        if inc is not None and inc.logdirs is not None and inc.loop.is_running():
            self._call(inc, inc.logdirs.unwatch(path))

    def post(self, item: tuple[Any, ...]) -> None:
        """Queue a published point or status; one loop wake-up per batch of calls."""
        self._pending.append(item)
        if self._wake_scheduled:
            return
        inc = self._inc
        if inc is None:
            return  # (re)starting: _launch drains once the new loop serves
        self._wake_scheduled = True
        try:
            inc.loop.call_soon_threadsafe(self._drain, inc)
        except RuntimeError:  # that loop just closed (restart): the next incarnation drains
            self._wake_scheduled = False

    def forget_after_fork(self) -> None:
        """In a fork child: the threads are gone and the server belongs to the parent."""
        self._inc = None
        self._pending = deque()

    # ---- on the loop --------------------------------------------------------------------------

    def _drain(self, inc: _Incarnation) -> None:
        """Move published items into the hub, in order (a status flushes points before it)."""
        self._wake_scheduled = False  # before popping: a later append schedules a new wake
        hub = inc.hub
        if hub is None or inc is not self._inc:
            return
        pending = self._pending
        batches: dict[tuple[str, str], ScalarBatch] = {}
        while True:
            try:
                item = pending.popleft()
            except IndexError:
                break
            try:
                if item[0] is STATUS:
                    if batches:
                        hub.ingest(batches.values())
                        batches = {}
                    hub.publish_status(item[1], item[2], **item[3])
                    continue
                run, tag, step, wall_time, value = item
                batch = batches.get((run, tag))
                if batch is None:
                    if not hub.has_run(run):
                        hub.note_run(run, None)
                    batch = batches[(run, tag)] = ScalarBatch(run, tag)
                batch.append(step, wall_time, value)
            except Exception:
                logger.exception("dropping published item %r", item[:3])
        if batches:
            hub.ingest(batches.values())

    async def _serve(self, inc: _Incarnation) -> None:
        """Build hub + app on this loop and start serving on the bound socket."""
        # wall-clock µs: a restarted server's seqs are above its predecessor's (clients get reset)
        inc.hub = Hub(self._config, seq_start=time.time_ns() // 1000)
        inc.loop_lag = LoopLagMonitor()
        inc.loop_lag.start()
        state = AppState(
            hub=inc.hub,
            config=self._config,
            loop_lag=inc.loop_lag,
            restarts=self._restarts,
            reader_errors=lambda: inc.logdirs.reader_errors() if inc.logdirs else {},
            logdirs=lambda: list(self._watches()),
        )
        app = create_app(state)
        quiet_accept_errors(asyncio.get_running_loop())
        inc.runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            handler_cancellation=True,
            keepalive_timeout=self._config.header_timeout_s,  # the request-header timeout (connections.py)
        )
        await inc.runner.setup()
        max_clients = self._config.max_clients or default_max_clients()
        site = CappedSockSite(
            inc.runner, inc.sock, max_clients=max_clients, header_timeout_s=self._config.header_timeout_s
        )
        await site.start()
        inc.logdirs = LogdirWatches(inc.hub, poll_interval_s=self._config.poll_interval_s, wanted=self._watches)
        for path, prefix in list(self._watches().items()):  # a restart re-reads watched logdirs
            await inc.logdirs.watch(path, prefix)

    async def _ateardown(self, inc: _Incarnation) -> None:
        """Graceful: watchers, then the runner (ends SSE/WS, closes the socket), then the hub."""
        self._drain(inc)
        if inc.logdirs is not None:
            await inc.logdirs.close()
        if inc.runner is not None:
            await inc.runner.cleanup()
            _forget_old_apps()
        if inc.hub is not None:
            await inc.hub.close()
        if inc.loop_lag is not None:
            await inc.loop_lag.stop()
        inc.torn_down = True

    def _run_loop(self, inc: _Incarnation) -> None:
        """Body of the server thread: run until stopped, then always tear down and close."""
        loop = inc.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                if not inc.torn_down:
                    loop.run_until_complete(asyncio.wait_for(self._ateardown(inc), STOP_TIMEOUT_S))
            except BaseException:
                logger.exception("lightning-stream server on port %d did not shut down cleanly", inc.port)
            try:
                tasks = asyncio.all_tasks(loop)
                if tasks:
                    loop.run_until_complete(asyncio.gather(*(cancel_task(t, 1.0) for t in tasks)))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:
                logger.debug("error while closing the server loop", exc_info=True)
            finally:
                inc.sock.close()  # normally closed by the runner already; idempotent
                asyncio.set_event_loop(None)
                loop.close()

    # ---- incarnations (caller's thread, under the lock) ---------------------------------------

    def _launch(self, sock: socket.socket, port: int) -> None:
        """Start an incarnation on a bound socket; returns once ``/health`` answers."""
        inc = _Incarnation(loop=asyncio.new_event_loop(), sock=sock, port=port)
        inc.thread = threading.Thread(target=self._run_loop, args=(inc,), name=f"lightning-stream-{port}", daemon=True)
        start_thread(inc.thread)  # its executor's workers inherit the signal mask
        try:
            asyncio.run_coroutine_threadsafe(self._serve(inc), inc.loop).result(START_TIMEOUT_S)
            if not self._health_ok(port):
                raise ServerStartError(
                    f"the server bound port {port} but /health did not answer within "
                    f"{HEALTH_TRIES} tries; check for a firewall on {self.host!r} or see the log above"
                )
        except BaseException as exc:
            self._shutdown_incarnation(inc, timeout=STOP_TIMEOUT_S)
            if isinstance(exc, ServerStartError):
                raise
            if isinstance(exc, Exception):
                raise ServerStartError(
                    f"the stream server on {self.host!r} port {port} failed to start: {exc!r}; "
                    "see the traceback above, or report it with the log"
                ) from exc
            raise
        self._inc = inc
        self._wake_scheduled = True  # whatever was published while (re)starting goes out now
        inc.loop.call_soon_threadsafe(self._drain, inc)

    def _health_ok(self, port: int) -> bool:
        for _ in range(HEALTH_TRIES):
            health = health_check(self.host, port, timeout=START_TIMEOUT_S / HEALTH_TRIES)
            if health is not None and health.get("pid", os.getpid()) == os.getpid():
                return True
        return False

    def _shutdown_incarnation(self, inc: _Incarnation, *, timeout: float) -> bool:
        """Stop one incarnation's loop and join its thread; True if it ended within ``timeout``."""
        with contextlib.suppress(RuntimeError):  # loop already closed
            inc.loop.call_soon_threadsafe(inc.loop.stop)
        ended = True
        if inc.thread is not None and inc.thread is not threading.current_thread():
            inc.thread.join(timeout)
            ended = not inc.thread.is_alive()
        if not ended:
            # A hung loop: close the listening socket from here so the port can be re-bound.
            logger.warning("lightning-stream server thread on port %d is hung; abandoning it", inc.port)
        inc.sock.close()
        return ended

    def restart(self, *, teardown_timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the current incarnation (if any) and start a new one on the same port.

        Raises:
            PortInUseError: another process took the port in between.
            ServerStartError: the new incarnation did not start.
        """
        old, self._inc = self._inc, None
        port = self.port
        assert port is not None, "restart() before start()"
        if old is not None:
            self._shutdown_incarnation(old, timeout=teardown_timeout)
        try:
            sock = bind_listener(self.host, port)
        except OSError as exc:
            if is_in_use(exc):
                raise PortInUseError(
                    f"cannot restart on port {port}: another process took it ({exc.strerror}); "
                    "stop that process, or stop() this server and start a new one with port=None",
                    port=port,
                ) from exc
            raise ServerStartError(f"cannot restart on {self.host!r} port {port}: {exc}") from exc
        self._launch(sock, port)

    def loop_answers(self, timeout: float) -> bool:
        """Whether the server loop runs a callback within ``timeout`` s: alive, however full.

        The supervisor asks this when ``/health`` does not answer, so a server whose
        connections (or descriptors) are all taken is not restarted for it.
        """
        inc = self._inc
        if inc is None or not self.alive():
            return False
        answered: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            inc.loop.call_soon_threadsafe(answered.set_result, None)
            answered.result(timeout)
        except (RuntimeError, concurrent.futures.TimeoutError):  # closed, or hung
            return False
        return True

    def _call(self, inc: _Incarnation, coro: Any) -> Any:
        """Run ``coro`` on the server loop and wait for it (never from the loop thread itself)."""
        if threading.current_thread() is inc.thread:
            coro.close()
            raise RuntimeError("this StreamServer method blocks; call it from another thread than the server's")
        future = asyncio.run_coroutine_threadsafe(coro, inc.loop)
        try:
            return future.result(timeout=CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServerNotRunningError(
                f"the server on port {inc.port} did not answer within {CALL_TIMEOUT_S:.0f} s (stuck?); "
                "force_restart() it, or check /health"
            ) from None


def _forget_old_apps() -> None:
    """Let a stopped app (and its hub) be collected.

    aiohttp memoises middleware chains in a module-level ``lru_cache`` whose keys hold the
    route handlers, i.e. our app and hub (aiohttp PR #9158): without this, every restart
    would keep the previous incarnation alive. Private API, so looked up defensively.
    """
    from aiohttp import web_app

    cache = getattr(web_app, "_cached_build_middleware", None)
    if cache is not None and hasattr(cache, "cache_clear"):
        cache.cache_clear()

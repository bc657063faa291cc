"""One stream server: an aiohttp app on its own asyncio loop, in a daemon thread.

``StreamServer`` never touches the caller's event loop, so it works the same from a
plain script, from inside a running loop (Jupyter, an asyncio app, pytest-asyncio) and
from several threads at once. What the caller can rely on:

* ``start()`` returns only once the port is bound and ``/health`` answers; a failure
  is raised in the caller's thread (``ServerStartError``, ``PortInUseError``).
* ``stop()`` is graceful and complete: watchers are cancelled, SSE streams end and
  WebSockets get 1001 GOING_AWAY (the app's ``on_shutdown``), the runner is cleaned
  up, the thread joined and the registry entry removed. When it returns the port is
  bindable again at once — no sleeps (the seed slept a second and still failed).
* ``publish()`` / ``publish_status()`` are O(µs) from any thread: a deque append, and
  one ``call_soon_threadsafe`` wake-up per batch of calls, not per call.

Each start creates a fresh *incarnation* (loop, thread, socket, hub, runner); the
health supervisor (``supervisor.py``) replaces a dead or hung incarnation with a new one
on the same port. Points that came from watched logdirs are re-read by the new
incarnation; points sent with ``publish()`` before a restart are lost, and sequence
numbers start again (clients get ``reset``).

Nested logdirs (``%lightning_stream lightning_logs``, then a ``StreamCallback`` watching
``lightning_logs/version_0``): one directory is one run, whatever watches see it. A watch
inside an already watched logdir starts no watcher: its runs keep the outer watch's names
(``watch()`` returns the name of its root). A watch *around* earlier ones leaves their
directories to them while they are watched. An unwatched logdir's runs keep their names and
read offsets for the next watcher of their directories (``LogdirWatcher.retire``/``adopt``),
so a run is neither renamed nor sent twice. Directories are compared resolved (symlinks followed).

Process hooks: at exit and on SIGTERM every live server of this process is stopped
(the previous SIGTERM handler is chained); in a child created by ``fork`` every server
object is inert (never serves, never removes the parent's registry entry).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import logging
import operator
import os
import signal
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web
from typing_extensions import Self

from lightning_stream._version import __version__
from lightning_stream.app import AppState, create_app
from lightning_stream.config import ServerConfig
from lightning_stream.connections import CappedSockSite, default_max_clients, quiet_accept_errors
from lightning_stream.errors import PortInUseError, RegistryError, ServerNotRunningError, ServerStartError
from lightning_stream.hub import STATES, Hub
from lightning_stream.looplag import LoopLagMonitor
from lightning_stream.ports import BoundSocket, bind_listener, bind_server_socket, is_in_use
from lightning_stream.registry import ServerInfo, connect_host, health_check, remove_entry, write_entry
from lightning_stream.scalars import ScalarBatch
from lightning_stream.threads import start_thread

if TYPE_CHECKING:
    from lightning_stream.supervisor import Supervisor
    from lightning_stream.watcher import LogdirWatcher, Retired

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # generous: a loaded 2-core CI box
STOP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 3.0  # handlers still running after on_shutdown get this long
WATCH_STOP_TIMEOUT_S = 2.0  # a cancelled logdir watcher gets this long to end
CALL_TIMEOUT_S = 60.0  # longest a caller's thread waits on the server loop (watch's first scan included)
FINAL_SCAN_TIMEOUT_S = 5.0  # unwatch reads what was flushed last, for at most this long
HEALTH_TRIES = 3
_READER_ERROR_KINDS = ("crc_errors", "bad_lengths", "parse_errors")

# ``StreamServer.state``: new -> running -> stopped; forked in a fork child (inert).
NEW, RUNNING, STOPPED, FORKED = "new", "running", "stopped", "forked"
_NEW, _RUNNING, _STOPPED, _FORKED = NEW, RUNNING, STOPPED, FORKED
_STATUS = object()  # marks a status item in the publish deque


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
    watches: dict[str, tuple[LogdirWatcher, asyncio.Task[None], Callable[[list[ScalarBatch]], None]]] = field(
        default_factory=dict
    )
    aliases: dict[str, str] = field(default_factory=dict)
    """A watched logdir inside another watcher's -> that watcher's path (it reads the files)."""
    retired: dict[str, Retired] = field(default_factory=dict)
    """Run directories (resolved) of stopped watchers -> run name and readers, for the next watcher."""
    torn_down: bool = False


class StreamServer:
    """An aiohttp stream server on its own loop thread; see the module docstring.

    Args:
        config: a ``ServerConfig``; by default built from ``LIGHTNING_STREAM_*`` and ``kw``.
        **kw: ``ServerConfig`` fields, overriding ``config``.

    Example::

        with StreamServer(port=None) as server:
            server.watch("lightning_logs")
            print(server.url)
    """

    def __init__(self, config: ServerConfig | None = None, **kw: Any) -> None:
        if config is None:
            config = ServerConfig.from_env(**kw)
        elif kw:
            config = config.replace(**kw)
        self._config = config
        self._lock = threading.RLock()
        self._state = _NEW
        self._owner_pid = os.getpid()
        self._inc: _Incarnation | None = None
        self._bound: BoundSocket | None = None
        self._pending: deque[tuple[Any, ...]] = deque()
        self._wake_scheduled = False
        self._watches: dict[str, str | None] = {}  # logdir -> prefix; survives restarts
        self._watch_names: dict[str, str] = {}  # logdir -> run name of its root, as watch() returned it
        self._restarts = 0
        self._started_at = 0.0
        self._supervisor: Supervisor | None = None
        self._release: Callable[[], bool] | None = None  # the owner's release (set_release)
        self._registered = False
        self._stopping = False

    # ---- properties ---------------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        return self._config

    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"stopped"``, or ``"forked"`` (a fork child's inert copy)."""
        return self._state

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def port(self) -> int:
        """The port actually bound (differs from ``requested_port`` after a fallback)."""
        if self._bound is None:
            raise ServerNotRunningError("the server has no port yet; call start() first")
        return self._bound.port

    @property
    def requested_port(self) -> int | None:
        return self._config.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` for a local client (a wildcard bind is given as loopback)."""
        host = connect_host(self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def fallback_message(self) -> str:
        """Why the port differs from the one asked for (empty when it does not)."""
        return self._bound.message if self._bound is not None else ""

    @property
    def pid(self) -> int | None:
        """The process that serves (the one in ``/health`` and the registry): this one, here."""
        return self._owner_pid

    @property
    def restarts(self) -> int:
        """How often the supervisor (or ``restart()``) replaced the server thread."""
        return self._restarts

    @property
    def logdirs(self) -> list[str]:
        return list(self._watches)

    @property
    def started_at(self) -> float:
        return self._started_at

    def is_alive(self) -> bool:
        """True while started, not stopped, and the server thread's loop is running."""
        inc = self._inc
        return (
            self._state == _RUNNING
            and inc is not None
            and inc.thread is not None
            and inc.thread.is_alive()
            and inc.loop.is_running()
        )

    def __repr__(self) -> str:
        where = self.url if self._bound is not None else "unbound"
        return f"<StreamServer {where} {self._state} restarts={self._restarts}>"

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind, start the loop thread, wait for ``/health``; idempotent while running.

        Raises:
            PortInUseError: the fixed port is busy and ``strict_port=True``.
            ServerStartError: binding or the app's startup failed, or ``/health`` did not answer.
        """
        with self._lock:
            self._check_owner("start")
            if self._state == _RUNNING:
                return self
            if self._state == _STOPPED:
                raise ServerStartError("this StreamServer was stopped; create a new one (or use the manager)")
            self._begin_serving()
            self._state = _RUNNING
            self._started_at = time.time()
            _LIVE.add(self)
            _install_process_hooks()
            self._publish_registry()
            self._start_supervisor()
            logger.info("lightning-stream serving at %s (pid %s)", self.url, self.pid)
            return self

    def _begin_serving(self) -> None:
        """Bind and start serving here; ``IsolatedStreamServer`` starts its child process instead."""
        bound = bind_server_socket(self.host, self._config.port, strict=self._config.strict_port)
        self._bound = bound
        self._launch(bound.sock, bound.port)

    def stop(self) -> None:
        """Stop gracefully; returns with the port free and the registry entry gone. Idempotent."""
        if self._state == _FORKED or os.getpid() != self._owner_pid:
            return  # a fork child owns nothing: never touch the parent's server or registry
        self._stopping = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop()  # outside the lock: a restart in progress holds it
        with self._lock:
            if self._state != _RUNNING:
                self._stopping = False
                return
            inc, self._inc = self._inc, None
            self._state = _STOPPED
            if inc is not None:
                self._shutdown_incarnation(inc, timeout=STOP_TIMEOUT_S)
            self._unpublish_registry()
            _LIVE.discard(self)
            self._stopping = False
            logger.info("lightning-stream server on port %d stopped", self.port)

    def restart(self) -> None:
        """Stop the server thread and start a fresh one on the same port (watched logdirs kept).

        Raises:
            ServerNotRunningError: the server is not running.
            PortInUseError: another process took the port in between.
        """
        with self._lock:
            self._check_owner("restart")
            if self._state != _RUNNING:
                raise ServerNotRunningError("restart() needs a running server; call start() first")
            self._replace_incarnation("restart requested")

    def __enter__(self) -> StreamServer:
        if self._state == _NEW:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        release = self._release
        if release is None or not release():
            self.stop()

    def set_release(self, release: Callable[[], bool] | None) -> None:
        """Give ``with server:`` its owner's release: called on exit instead of ``stop()``.

        ``release()`` drops the reference the owner holds and returns True, or returns False
        when it holds none (then the server stops). The manager passes this callable rather
        than itself, so the server never imports or calls its owner.
        """
        self._release = release

    # ---- watching and publishing (any thread) -------------------------------------------------

    def watch(self, logdir: str | os.PathLike[str], prefix: str | None = None) -> str:
        """Stream every scalar under ``logdir`` (existing data first); idempotent per logdir.

        Returns after the initial scan, so what is on disk is queryable at once. ``logdir`` may
        be an fsspec URL (``s3://bucket/logs``, ``gs://...``, ``memory://...``): it is then polled.
        Returns the run name of ``logdir`` itself: ``prefix`` (``"."`` without one), or the name
        an outer watched logdir already gives it (see "Nested logdirs" in the module docstring).
        """
        path = _logdir_key(logdir)
        with self._lock:
            self._require_serving("watch")
            if path in self._watches:
                if self._watches[path] != prefix:
                    raise ValueError(
                        f"{path!r} is already watched with prefix={self._watches[path]!r}; unwatch it first"
                    )
                return self._watch_names.get(path) or prefix or "."
            name = self._start_watch(path, prefix) or prefix or "."
            self._watches[path] = prefix
            self._watch_names[path] = name
            self._publish_registry()
            return name

    def unwatch(self, logdir: str | os.PathLike[str]) -> bool:
        """Stop watching ``logdir`` (its data stays queryable). False if it was not watched."""
        path = _logdir_key(logdir)
        with self._lock:
            if path not in self._watches:
                return False
            del self._watches[path]
            self._watch_names.pop(path, None)
            self._stop_watch(path)
            self._publish_registry()
            return True

    # Where the watching happens; ``IsolatedStreamServer`` overrides these three (the child does it).

    def _require_serving(self, what: str) -> None:
        """Raise ``ServerNotRunningError`` (saying what to do) unless ``what`` can be done now."""
        self._require_running(what)

    def _start_watch(self, path: str, prefix: str | None) -> str | None:
        """Watch ``path`` on the loop; returns after its first scan, with the run name of ``path``."""
        inc = self._require_running("watch")
        name: str = self._call(inc, self._awatch(inc, path, prefix))
        return name

    def _stop_watch(self, path: str) -> None:
        """Stop watching ``path`` (reading what was flushed last), if the loop still runs."""
        inc = self._inc
        if self._state == _RUNNING and inc is not None and inc.loop.is_running():
            self._call(inc, self._aunwatch(inc, path))

    def publish(self, run: str, tag: str, step: int, value: float, wall_time: float | None = None) -> None:
        """Send one point to every client, from any thread, in O(µs)."""
        if type(run) is not str or type(tag) is not str:
            raise TypeError(f"run and tag must be str, got run={run!r} tag={tag!r}")
        item = (
            run,
            tag,
            operator.index(step),
            time.time() if wall_time is None else float(wall_time),
            float(value),
        )
        self._enqueue(item)

    def publish_status(self, run: str, state: str, **fields: Any) -> None:
        """Broadcast a run lifecycle change (``state`` in started/epoch/finished/failed)."""
        if state not in STATES:
            raise ValueError(f"state={state!r} is not a run state; use one of {', '.join(STATES)}")
        self._enqueue((_STATUS, run, state, fields))

    def _enqueue(self, item: tuple[Any, ...]) -> None:
        if self._state != _RUNNING or os.getpid() != self._owner_pid:
            raise ServerNotRunningError(self._not_running_message("publish"))
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
                if item[0] is _STATUS:
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
            restarts=lambda: self._restarts,
            reader_errors=lambda: _reader_errors(inc),
            logdirs=lambda: list(self._watches),
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
        for path, prefix in list(self._watches.items()):  # a restart re-reads watched logdirs
            await self._awatch(inc, path, prefix)

    async def _awatch(self, inc: _Incarnation, path: str, prefix: str | None) -> str:
        from lightning_stream.watcher import LogdirWatcher

        hub = inc.hub
        assert hub is not None
        owner = _covering_watch(inc, path)
        if owner is not None:  # already read by an outer watch: one directory, one run
            inc.aliases[path] = owner
            return _name_in(inc.watches[owner][0], path, owner)
        local = not _is_url(path)
        watcher = LogdirWatcher(
            path,
            prefix=prefix,
            poll_interval_s=self._config.poll_interval_s,
            skip=functools.partial(_left_to_inner_watch, inc, path) if local else None,
            adopt=functools.partial(_adopt_retired, inc) if local else None,
        )
        noted: set[str] = set()

        def sink(batches: list[ScalarBatch]) -> None:
            for run, directory in watcher.runs().items():
                if run not in noted:
                    noted.add(run)
                    hub.note_run(run, directory)
            for run, hparams in watcher.take_hparams().items():
                hub.note_hparams(run, hparams)
            hub.ingest(batches, coalesced=True)

        sink(await asyncio.to_thread(watcher.scan))
        task = asyncio.get_running_loop().create_task(
            watcher.watch(sink, max_busy_gap_s=hub.broadcast_gap_s), name=f"lightning-stream-watch {path}"
        )
        task.add_done_callback(_log_watch_end)
        inc.watches[path] = (watcher, task, sink)
        return watcher.run_name(watcher.logdir)

    async def _aunwatch(self, inc: _Incarnation, path: str, *, final_scan: bool = True) -> None:
        owner = inc.aliases.pop(path, None)
        if owner is not None:  # the outer watch reads it: read what was flushed last, for the caller
            if final_scan and owner in inc.watches:
                watcher, _, sink = inc.watches[owner]
                await self._final_scan(owner, watcher, sink)
            return
        entry = inc.watches.pop(path, None)
        if entry is None:
            return
        watcher, task, sink = entry
        if not await _cancel(task, WATCH_STOP_TIMEOUT_S):
            logger.warning("the watcher of %s did not stop within %.1f s; abandoning it", path, WATCH_STOP_TIMEOUT_S)
            return
        if not final_scan:
            return  # the server is going away: nothing to hand over
        await self._final_scan(path, watcher, sink)
        # Its runs keep their names and offsets for whichever watcher reads their directories next:
        # an outer watch (which skipped them until now), or a later watch() of this logdir.
        for directory, retired in watcher.retire().items():
            inc.retired[_real(directory)] = retired
        for alias in [a for a, o in inc.aliases.items() if o == path]:
            del inc.aliases[alias]  # still watched themselves: they get their own watcher now
            if alias in self._watches:
                await self._awatch(inc, alias, self._watches[alias])

    @staticmethod
    async def _final_scan(path: str, watcher: LogdirWatcher, sink: Callable[[list[ScalarBatch]], None]) -> None:
        """What was flushed just before unwatch (the callback's teardown flush) is read, not dropped."""
        try:
            sink(await asyncio.wait_for(asyncio.to_thread(watcher.scan), FINAL_SCAN_TIMEOUT_S))
        except Exception as error:
            logger.warning("final read of %s failed: %s", path, error)

    async def _ateardown(self, inc: _Incarnation) -> None:
        """Graceful: watchers, then the runner (ends SSE/WS, closes the socket), then the hub."""
        self._drain(inc)
        for path in list(inc.watches):
            await self._aunwatch(inc, path, final_scan=False)
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
                    loop.run_until_complete(asyncio.gather(*(_cancel(t, 1.0) for t in tasks)))
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

    def _replace_incarnation(self, reason: str, *, teardown_timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the current incarnation (if any) and start a new one on the same port."""
        old, self._inc = self._inc, None
        port = self.port
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
        self._restarts += 1
        self._publish_registry()
        logger.warning("lightning-stream server on port %d restarted (%s); restarts=%d", port, reason, self._restarts)

    def loop_answers(self, timeout: float) -> bool:
        """Whether the server loop runs a callback within ``timeout`` s: alive, however full.

        The supervisor asks this when ``/health`` does not answer, so a server whose
        connections (or descriptors) are all taken is not restarted for it.
        """
        inc = self._inc
        if inc is None or not self.is_alive():
            return False
        answered: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            inc.loop.call_soon_threadsafe(answered.set_result, None)
            answered.result(timeout)
        except (RuntimeError, concurrent.futures.TimeoutError):  # closed, or hung
            return False
        return True

    def _supervised_restart(self, reason: str) -> bool:
        """The supervisor's ``restart``; False if it gave up this round (it tries again later)."""
        with self._lock:
            if self._state != _RUNNING or self._stopping:
                return False
            if self.is_alive() and health_check(self.host, self.port, timeout=0.5) is not None:
                return False  # recovered, or someone else restarted it while we waited for the lock
            try:
                self._replace_incarnation(reason, teardown_timeout=1.0)
            except ServerStartError as exc:
                logger.error("lightning-stream supervisor could not restart the server: %s", exc)
                return False
            return True

    def _start_supervisor(self) -> None:
        interval = self._config.watchdog_interval_s
        if interval > 0 and self._supervisor is None:
            self._supervisor = self._new_supervisor(interval_s=interval)
            self._supervisor.start()

    def _new_supervisor(self, *, interval_s: float) -> Supervisor:
        """A (not started) ``Supervisor`` of this server, wired through callables."""
        from lightning_stream.supervisor import Supervisor

        port = self.port
        return Supervisor(
            alive=self.is_alive,
            probe=lambda timeout: health_check(self.host, port, timeout=timeout) is not None,
            loop_answers=self.loop_answers,
            restart=self._supervised_restart,
            interval_s=interval_s,
            name=f"port {port}",
        )

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

    # ---- registry -----------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """This server as the registry describes it."""
        return ServerInfo(
            pid=self._owner_pid,
            host=self.host,
            port=self.port,
            url=self.url,
            version=__version__,
            started_at=self._started_at,
            logdirs=tuple(self._watches),
            token_required=self._config.token is not None,
        )

    def _publish_registry(self) -> None:
        if not self._config.registry or self._state != _RUNNING:
            return
        try:
            write_entry(self.info())
            self._registered = True
        except RegistryError as exc:
            logger.warning("%s (the server works; `lightning-stream ls` will not list it)", exc)

    def _unpublish_registry(self) -> None:
        if self._registered and os.getpid() == self._owner_pid:
            remove_entry(self._owner_pid, self.port)
            self._registered = False

    # ---- helpers ------------------------------------------------------------------------------

    def _check_owner(self, what: str) -> None:
        if self._state == _FORKED or os.getpid() != self._owner_pid:
            raise ServerNotRunningError(self._not_running_message(what))

    def _require_running(self, what: str) -> _Incarnation:
        self._check_owner(what)
        inc = self._inc
        if self._state != _RUNNING or inc is None:
            raise ServerNotRunningError(self._not_running_message(what))
        return inc

    def _not_running_message(self, what: str) -> str:
        if self._state == _FORKED or os.getpid() != self._owner_pid:
            return (
                f"cannot {what}: this process (pid {os.getpid()}) is a fork of pid {self._owner_pid}, "
                "which owns the server; do it in the parent process"
            )
        return f"cannot {what}: the server is {self._state}; call start() (or manager.acquire()) first"

    def _forget_after_fork(self) -> None:
        """In a fork child: the threads are gone and the server belongs to the parent."""
        self._lock = threading.RLock()
        self._state = _FORKED
        self._inc = None
        self._supervisor = None
        self._pending = deque()
        self._registered = False


def _reader_errors(inc: _Incarnation) -> dict[str, int]:
    totals = dict.fromkeys(_READER_ERROR_KINDS, 0)
    for watcher, _, _ in list(inc.watches.values()):
        stats: Any = getattr(watcher, "stats", None)
        items = stats.items() if isinstance(stats, Mapping) else vars(stats).items() if stats is not None else ()
        for kind, value in items:
            if kind in totals and isinstance(value, int):
                totals[kind] += value
    return totals


async def _cancel(task: asyncio.Task[Any], timeout: float) -> bool:
    """Cancel ``task`` and wait for it, at most ``timeout`` s; True if it ended.

    Cancels more than once: a cancellation that lands inside an anyio shielded scope
    (watchfiles' ``awatch`` waits on its notify thread that way) is swallowed, and the
    next one, after the shield, is not.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        await asyncio.wait({task}, timeout=min(0.05, remaining))
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
    return True


def _log_watch_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a logdir watcher stopped: %r", task.exception(), exc_info=task.exception())


# ---- process hooks: atexit, SIGTERM, fork -------------------------------------------------------

_LIVE: weakref.WeakSet[StreamServer] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None


def stop_all_servers() -> int:
    """Stop every running server of this process (atexit, SIGTERM); returns how many."""
    stopped = 0
    for server in list(_LIVE):
        try:
            if server._owner_pid == os.getpid() and server._state == _RUNNING:
                server.stop()
                stopped += 1
        except Exception:
            logger.exception("error stopping %r", server)
    return stopped


def _install_process_hooks() -> None:
    global _hooks_installed, _sigterm_installed, _previous_sigterm
    with _hooks_lock:
        if not _hooks_installed:
            atexit.register(stop_all_servers)
            _hooks_installed = True
        # signal.signal only works in the main thread; a server started elsewhere relies on
        # atexit until one is started from the main thread.
        if not _sigterm_installed and threading.current_thread() is threading.main_thread():
            try:
                _previous_sigterm = signal.getsignal(signal.SIGTERM)
                signal.signal(signal.SIGTERM, _on_sigterm)
                _sigterm_installed = True
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Stop our servers (registry entries removed), then do what was done before us.

    When a handler installed after ours chains to us (Lightning's ``_SignalConnector``
    does, then stops training gracefully with ``SIGTERMException`` so callbacks see
    ``on_exception``), the process's fate is theirs: we neither stop the servers (the
    callback releases them, atexit catches the rest) nor die of SIGTERM here.
    """
    previous = _previous_sigterm
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        if callable(previous):
            previous(signum, frame)
        return
    stop_all_servers()
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or unknown): die of SIGTERM as the parent expects
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def _after_fork_in_child() -> None:
    for server in list(_LIVE):
        server._forget_after_fork()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_url(path: str) -> bool:
    from lightning_stream.remote import is_url

    return is_url(path)


@functools.lru_cache(maxsize=1024)
def _real(path: str) -> str:
    """``path`` with symlinks resolved (cached: a watched root's answer does not change while watched)."""
    return path if _is_url(path) else os.path.realpath(path)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _name_in(outer: LogdirWatcher, path: str, owner: str) -> str:
    """The run name ``outer`` (watching ``owner``) gives the directory ``path`` inside it."""
    return outer.run_name(os.path.join(outer.logdir, os.path.relpath(_real(path), _real(owner))))


def _adopt_retired(inc: _Incarnation, directory: str) -> Retired | None:
    """A stopped watcher's name and readers of ``directory``, for the watcher that reads it now."""
    return inc.retired.pop(os.path.realpath(directory), None)


def _covering_watch(inc: _Incarnation, path: str) -> str | None:
    """The deepest watcher (other than ``path``'s own) whose logdir holds ``path``: it reads its runs."""
    if _is_url(path):
        return None
    real = _real(path)
    holders = [o for o in inc.watches if o != path and not _is_url(o) and _inside(real, _real(o))]
    return max(holders, key=lambda o: len(_real(o)), default=None)


def _left_to_inner_watch(inc: _Incarnation, path: str, directory: str) -> bool:
    """The watcher of ``path`` skips ``directory`` when a watcher of a logdir inside ``path`` reads it.

    Called from the scan's worker thread: it reads a snapshot of the loop's ``watches`` (``tuple()``
    copies a dict atomically under the GIL), and ``_adopt_retired``'s ``dict.pop`` is atomic too.
    """
    real = os.path.realpath(directory)
    return any(
        other != path and not _is_url(other) and _inside(real, _real(other)) and _inside(_real(other), _real(path))
        for other in tuple(inc.watches)
    )


def _logdir_key(logdir: str | os.PathLike[str]) -> str:
    """A local logdir as an absolute path; a URL (``s3://...``) as given, without a trailing ``/``."""
    from lightning_stream.remote import is_url

    return logdir.rstrip("/") if isinstance(logdir, str) and is_url(logdir) else os.path.abspath(os.fspath(logdir))


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

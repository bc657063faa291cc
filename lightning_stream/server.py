"""One stream server: a state machine over a backend that serves (a loop thread here, or a child process).

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
  one wake-up per batch of calls, not per call.

What is here: the state (``state``: new → running → stopped, or forked), the watched
logdirs (they survive restarts), the restart count, the registry entry and the health
supervisor (``supervisor.py``, wired with callables) of a server that serves in this
process. What serves is the *backend*, held by composition: ``threaded.ThreadBackend``
(default) or ``isolated.ChildBackend`` (``IsolatedStreamServer``). The owner (the manager)
is never imported: it hands the server a release callable (:meth:`StreamServer.set_release`).
Process hooks (atexit, SIGTERM, fork) are ``processhooks.py``'s.

Why one module of this length: the contracts of the public API (start, stop, watch, publish,
restart) are half of it; the state machine itself is small.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from typing_extensions import Self

from lightning_stream import processhooks
from lightning_stream._version import __version__
from lightning_stream.config import ServerConfig
from lightning_stream.errors import RegistryError, ServerNotRunningError, ServerStartError
from lightning_stream.health import connect_host, health_check
from lightning_stream.hub import STATES
from lightning_stream.registry import ServerInfo, remove_entry, write_entry
from lightning_stream.threaded import STATUS, STOP_TIMEOUT_S, ThreadBackend

if TYPE_CHECKING:
    from lightning_stream.supervisor import Supervisor

logger = logging.getLogger(__name__)

# ``StreamServer.state``: new -> running -> stopped; forked in a fork child (inert).
NEW, RUNNING, STOPPED, FORKED = "new", "running", "stopped", "forked"


class Backend(Protocol):
    """What serves for a ``StreamServer``; every call but ``post`` comes under the server's lock."""

    in_process: bool  # True: the registry entry, supervisor and /health pid are this process's

    @property
    def port(self) -> int | None: ...
    @property
    def fallback_message(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def restart(self, *, teardown_timeout: float) -> None: ...
    def alive(self) -> bool: ...
    def loop_answers(self, timeout: float) -> bool: ...
    def require(self, what: str) -> None: ...
    def watch(self, path: str, prefix: str | None) -> str: ...
    def unwatch(self, path: str) -> None: ...
    def post(self, item: tuple[Any, ...]) -> None: ...
    def forget_after_fork(self) -> None: ...


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
        self._state = NEW
        self._owner_pid = os.getpid()
        self._watches: dict[str, str | None] = {}  # logdir -> prefix; survives restarts
        self._watch_names: dict[str, str] = {}  # logdir -> run name of its root, as watch() returned it
        self._restarts = 0
        self._started_at = 0.0
        self._supervisor: Supervisor | None = None
        self._release: Callable[[], bool] | None = None  # the owner's release (set_release)
        self._registered = False
        self._stopping = False
        self._backend: Backend = self._make_backend()

    def _make_backend(self) -> Backend:
        """The thread backend; ``IsolatedStreamServer`` makes a child-process one."""
        return ThreadBackend(self._config, watches=self._watched, restarts=lambda: self._restarts)

    def _watched(self) -> Mapping[str, str | None]:
        return self._watches

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
        port = self._backend.port
        if port is None:
            raise ServerNotRunningError("the server has no port yet; call start() first")
        return port

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
        return self._backend.fallback_message

    @property
    def pid(self) -> int | None:
        """The process that serves (the one in ``/health`` and the registry)."""
        return self._backend.pid

    @property
    def restarts(self) -> int:
        """How often the supervisor (or ``restart()``) replaced the serving loop or process."""
        return self._restarts

    @property
    def logdirs(self) -> list[str]:
        return list(self._watches)

    @property
    def started_at(self) -> float:
        return self._started_at

    def is_alive(self) -> bool:
        """True while started, not stopped, and the backend serves (loop running, or child alive)."""
        return self._state == RUNNING and self._backend.alive()

    def owned_here(self) -> bool:
        """False in a fork child: the server belongs to the parent."""
        return self._state != FORKED and os.getpid() == self._owner_pid

    def __repr__(self) -> str:
        where = self.url if self._backend.port is not None else "unbound"
        pid = "" if self._backend.in_process else f" pid={self.pid}"
        return f"<{type(self).__name__} {where}{pid} {self._state} restarts={self._restarts}>"

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind, start serving, wait for ``/health``; idempotent while running.

        Raises:
            PortInUseError: the fixed port is busy and ``strict_port=True``.
            ServerStartError: binding or the app's startup failed, or ``/health`` did not answer.
        """
        with self._lock:
            self._check_owner("start")
            if self._state == RUNNING:
                return self
            if self._state == STOPPED:
                raise ServerStartError("this StreamServer was stopped; create a new one (or use the manager)")
            self._backend.start()
            self._state = RUNNING
            self._started_at = time.time()
            processhooks.register(self)
            self._publish_registry()
            self._start_supervisor()
            logger.info("lightning-stream serving at %s (pid %s)", self.url, self.pid)
            return self

    def stop(self) -> None:
        """Stop gracefully; returns with the port free and the registry entry gone. Idempotent."""
        if not self.owned_here():
            return  # a fork child owns nothing: never touch the parent's server or registry
        self._stopping = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop()  # outside the lock: a restart in progress holds it
        with self._lock:
            if self._state != RUNNING:
                self._stopping = False
                return
            self._state = STOPPED
            self._backend.stop(STOP_TIMEOUT_S)
            self._unpublish_registry()
            processhooks.discard(self)
            self._stopping = False
            logger.info("lightning-stream server on port %d stopped", self.port)

    def restart(self) -> None:
        """Stop serving and start afresh on the same port (watched logdirs kept).

        Raises:
            ServerNotRunningError: the server is not running.
            PortInUseError: another process took the port in between.
        """
        with self._lock:
            self._check_owner("restart")
            if self._state != RUNNING:
                raise ServerNotRunningError("restart() needs a running server; call start() first")
            self._restart("restart requested")

    def _restart(self, reason: str, *, teardown_timeout: float = STOP_TIMEOUT_S) -> None:
        """Under the lock: the backend restarts, then it is counted, registered and logged (once)."""
        self._backend.restart(teardown_timeout=teardown_timeout)
        self.count_restart(reason)

    def count_restart(self, reason: str) -> None:
        """Count (and log) a restart the backend made; a child backend calls it for a respawn."""
        self._restarts += 1
        self._publish_registry()
        logger.warning(
            "lightning-stream server on port %d restarted (%s); restarts=%d", self.port, reason, self._restarts
        )

    def __enter__(self) -> StreamServer:
        if self._state == NEW:
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
        an outer watched logdir already gives it (see "Nested logdirs" in ``logdirs.py``).
        """
        path = _logdir_key(logdir)
        with self._lock:
            self._require_running("watch")
            if path in self._watches:
                if self._watches[path] != prefix:
                    raise ValueError(
                        f"{path!r} is already watched with prefix={self._watches[path]!r}; unwatch it first"
                    )
                return self._watch_names.get(path) or prefix or "."
            name = self._backend.watch(path, prefix) or prefix or "."
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
            if self._state == RUNNING:
                self._backend.unwatch(path)
            self._publish_registry()
            return True

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
        self._enqueue((STATUS, run, state, fields))

    def _enqueue(self, item: tuple[Any, ...]) -> None:
        if self._state != RUNNING or os.getpid() != self._owner_pid:
            raise ServerNotRunningError(self._not_running_message("publish"))
        self._backend.post(item)

    # ---- health supervision (a server that serves in this process) ----------------------------

    def loop_answers(self, timeout: float) -> bool:
        """Whether the serving loop runs a callback within ``timeout`` s: alive, however full.

        The supervisor asks this when ``/health`` does not answer, so a server whose
        connections (or descriptors) are all taken is not restarted for it.
        """
        return self._state == RUNNING and self._backend.loop_answers(timeout)

    def _supervised_restart(self, reason: str) -> bool:
        """The supervisor's ``restart``; False if it gave up this round (it tries again later)."""
        with self._lock:
            if self._state != RUNNING or self._stopping:
                return False
            if self.is_alive() and health_check(self.host, self.port, timeout=0.5) is not None:
                return False  # recovered, or someone else restarted it while we waited for the lock
            try:
                self._restart(reason, teardown_timeout=1.0)
            except ServerStartError as exc:
                logger.error("lightning-stream supervisor could not restart the server: %s", exc)
                return False
            return True

    def _start_supervisor(self) -> None:
        interval = self._config.watchdog_interval_s
        if interval > 0 and self._supervisor is None and self._backend.in_process:
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

    # ---- registry -----------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """This server as the registry describes it."""
        return ServerInfo(
            pid=self.pid or 0,
            host=self.host,
            port=self.port,
            url=self.url,
            version=__version__,
            started_at=self._started_at,
            logdirs=tuple(self._watches),
            token_required=self._config.token is not None,
        )

    def _publish_registry(self) -> None:
        """A server in this process writes its entry; a child process writes its own."""
        if not self._config.registry or self._state != RUNNING or not self._backend.in_process:
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
        if not self.owned_here():
            raise ServerNotRunningError(self._not_running_message(what))

    def _require_running(self, what: str) -> None:
        self._check_owner(what)
        if self._state != RUNNING:
            raise ServerNotRunningError(self._not_running_message(what))
        self._backend.require(what)

    def _not_running_message(self, what: str) -> str:
        if not self.owned_here():
            return (
                f"cannot {what}: this process (pid {os.getpid()}) is a fork of pid {self._owner_pid}, "
                "which owns the server; do it in the parent process"
            )
        return f"cannot {what}: the server is {self._state}; call start() (or manager.acquire()) first"

    def _forget_after_fork(self) -> None:
        """In a fork child: the threads are gone and the server belongs to the parent."""
        self._backend.forget_after_fork()
        self._lock = threading.RLock()
        self._state = FORKED
        self._supervisor = None
        self._registered = False


def stop_all_servers() -> int:
    """Stop every running server of this process (atexit, SIGTERM); returns how many."""
    return processhooks.stop_all_servers()


def _logdir_key(logdir: str | os.PathLike[str]) -> str:
    """A local logdir as an absolute path; a URL (``s3://...``) as given, without a trailing ``/``."""
    from lightning_stream.objectstore import is_url

    return logdir.rstrip("/") if isinstance(logdir, str) and is_url(logdir) else os.path.abspath(os.fspath(logdir))

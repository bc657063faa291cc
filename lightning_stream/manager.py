"""The process-wide, ref-counted owner of stream servers.

``get_stream_server_manager()`` returns one thread-safe ``StreamServerManager`` per
process. ``acquire()`` starts a server lazily on first use and adds a reference;
``release()`` drops one; at zero the server stops (``stop()`` is complete: when
``release()`` returns the port is free). ``acquire_result()`` says what happened,
like TensorBoard's ``StartReused``/``StartLaunched``.

Decisions, documented here because callers depend on them:

* **Keying.** One server per (host, port asked for), as SPEC says. ``port=None``
  reuses whatever server this manager runs on the same host (the most recently
  launched one); an explicit port reuses a server that was asked for that port (even
  if it fell back to another) or is bound to it, and otherwise launches a *second*
  server. Hosts are compared as written (``localhost`` and ``127.0.0.1`` are two keys).
* **Other options** (token, budgets, ...) that differ from the running server's raise
  ``ValueError`` naming the option: never a silent mismatch. Options given as
  keywords are compared; a ``ServerConfig`` passed whole is compared field by field.
* **Linger.** ``linger_s=0`` (default): stop as soon as the count reaches zero.
  ``linger_s>0`` keeps it that long for back-to-back fits; an acquire in that window
  reuses it. An acquire that *launches* a server may set that server's own linger
  (``acquire_result(linger_s=...)``, ``None`` = until the process exits): ``StreamCallback``
  does, so the dashboard outlives ``fit`` and the next trainer reuses its URL, while
  explicit ``acquire()``/``release()`` keep the manager's exact reference counting.
* **Release without a server** releases the most recent acquisition (LIFO); releasing
  when nothing is held is a no-op that returns False (teardown paths may run twice).
* **Fork.** A child forgets every server (``os.register_at_fork``): it never serves,
  never stops the parent's servers, never removes their registry entries; its first
  ``acquire()`` launches its own server.
* **Isolation.** ``isolated=True`` (``StreamCallback``'s default) launches the server in a
  child process (``isolated.py``); if that cannot run, a thread serves and a warning says
  so. A running server is reused whichever way it runs.
* ``atexit`` and SIGTERM stop every server (``server.py`` installs those hooks).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from lightning_stream.config import ServerConfig
from lightning_stream.errors import ServerNotRunningError, ServerProcessError
from lightning_stream.server import RUNNING, StreamServer
from lightning_stream.threads import start_thread

logger = logging.getLogger(__name__)

# not compared between a request and a running server: the key (host, port), and where it runs
_KEY_FIELDS = frozenset({"host", "port", "strict_port", "isolated"})


@dataclass(frozen=True)
class AcquireResult:
    """What ``acquire_result()`` did: ``launched`` a new server, or reused a running one."""

    server: StreamServer
    launched: bool
    requested_port: int | None
    message: str

    @property
    def reused(self) -> bool:
        return not self.launched


class _ManagerDefault(enum.Enum):
    LINGER = "the manager's linger_s"


_MANAGER_LINGER = _ManagerDefault.LINGER


@dataclass(eq=False)
class _Entry:
    server: StreamServer
    refs: int = 0
    linger: threading.Timer | None = field(default=None, repr=False)
    linger_s: float | _ManagerDefault | None = _MANAGER_LINGER
    """This server's own linger (set by the acquire that launched it), else the manager's."""


class StreamServerManager:
    """Ref-counted servers of this process; see the module docstring.

    Args:
        linger_s: seconds a server with no references stays up before it stops (0 = stop now).
    """

    def __init__(self, *, linger_s: float = 0.0) -> None:
        _check_linger(linger_s, allow_none=False)
        self.linger_s = float(linger_s)
        self._lock = threading.RLock()
        self._entries: list[_Entry] = []
        self._acquired: list[StreamServer] = []  # acquisition order, for release() without a server
        _MANAGERS.add(self)

    # ---- acquire / release --------------------------------------------------------------------

    def acquire(self, config: ServerConfig | None = None, **kw: Any) -> StreamServer:
        """Start the server if needed, add a reference, return it (also a context manager).

        Raises:
            ValueError, TypeError: a bad option (the message names it and the fix), or one
                that conflicts with the running server.
            PortInUseError: ``strict_port=True`` and the port is held by another process.
            ServerStartError: the server could not start.
        """
        return self.acquire_result(config, **kw).server

    def acquire_result(
        self,
        config: ServerConfig | None = None,
        *,
        linger_s: float | _ManagerDefault | None = _MANAGER_LINGER,
        **kw: Any,
    ) -> AcquireResult:
        """Like ``acquire()``, and say whether the server was reused or launched.

        ``linger_s`` applies only when this call launches the server: how long it stays up after
        its last release (seconds, or ``None`` until the process exits); by default the manager's.
        """
        if linger_s is not _MANAGER_LINGER:
            _check_linger(linger_s, allow_none=True)
        requested, explicit = _requested(config, kw)
        with self._lock:
            entry = self._find(requested)
            if entry is not None:
                _check_compatible(entry.server, requested, explicit)
                self._cancel_linger(entry)
                server = entry.server
                if not server.is_alive():  # dead and the supervisor has not got to it yet
                    server.restart()
                entry.refs += 1
                self._acquired.append(server)
                return AcquireResult(
                    server,
                    launched=False,
                    requested_port=requested.port,
                    message=f"reusing lightning-stream server at {server.url} (pid {server.pid}, {entry.refs} users)",
                )
            server = _launch(requested)
            server.set_release(lambda: self._release_held(server))
            self._entries.append(_Entry(server, refs=1, linger_s=linger_s))
            self._acquired.append(server)
            message = f"launched lightning-stream server at {server.url}"
            if server.fallback_message:
                message += f" ({server.fallback_message})"
            return AcquireResult(server, launched=True, requested_port=requested.port, message=message)

    def release(self, server: StreamServer | None = None) -> bool:
        """Drop one reference (the most recent acquisition by default); True if the server stopped.

        Returns once the server is stopped and its port free when this was the last reference.
        """
        with self._lock:
            self._prune()
            if server is None:
                if not self._acquired:
                    logger.debug("release() with nothing acquired; ignored")
                    return False
                server = self._acquired[-1]
            entry = self._entry_of(server)
            if entry is None or entry.refs <= 0:
                logger.debug("release() of %r, which this manager does not hold; ignored", server)
                return False
            entry.refs -= 1
            _remove_last(self._acquired, server)
            if entry.refs > 0:
                return False
            linger = self.linger_s if entry.linger_s is _MANAGER_LINGER else entry.linger_s
            if linger is None and server.is_alive():
                return False  # until the process exits (atexit stops it) or cleanup()
            if linger and server.is_alive():
                timer = threading.Timer(linger, self._linger_expired, args=(entry,))
                timer.daemon = True
                entry.linger = timer
                start_thread(timer)
                return False
            self._entries.remove(entry)
            server.stop()
            return True

    def _release_held(self, server: StreamServer) -> bool:
        """``with server:``'s exit: release it if held (True), else leave it to stop (False)."""
        with self._lock:
            if self.refcount(server) <= 0:
                return False
            self.release(server)
            return True

    def refcount(self, server: StreamServer | None = None) -> int:
        """References held on ``server`` (all servers together by default)."""
        with self._lock:
            if server is None:
                return sum(e.refs for e in self._entries)
            entry = self._entry_of(server)
            return 0 if entry is None else entry.refs

    # ---- state and control --------------------------------------------------------------------

    @property
    def servers(self) -> list[StreamServer]:
        """Running servers of this manager, oldest first."""
        with self._lock:
            return [e.server for e in self._entries if e.server.is_alive()]

    def is_server_running(self, server: StreamServer | None = None) -> bool:
        """True if ``server`` (by default: any server of this manager) is serving."""
        with self._lock:
            if server is not None:
                return self._entry_of(server) is not None and server.is_alive()
            return any(e.server.is_alive() for e in self._entries)

    def force_restart(self, server: StreamServer | None = None) -> StreamServer:
        """Restart ``server`` (by default the most recent one) on the same port; references kept.

        Raises:
            ServerNotRunningError: this manager holds no server.
        """
        with self._lock:
            if server is None:
                if not self._entries:
                    raise ServerNotRunningError("no server to restart; call acquire() first")
                server = self._acquired[-1] if self._acquired else self._entries[-1].server
            elif self._entry_of(server) is None:
                raise ServerNotRunningError(f"{server!r} is not held by this manager; acquire() it first")
            server.restart()
            return server

    def cleanup(self) -> int:
        """Stop every server now, whatever the counts; returns how many were stopped."""
        with self._lock:
            entries, self._entries = self._entries, []
            self._acquired.clear()
            for entry in entries:
                self._cancel_linger(entry)
                entry.server.stop()
            return len(entries)

    # ---- internals ----------------------------------------------------------------------------

    def _prune(self) -> None:
        """Forget servers stopped behind our back (``server.stop()``, SIGTERM)."""
        if all(e.server.state == RUNNING for e in self._entries):
            return
        self._entries = [e for e in self._entries if e.server.state == RUNNING]
        held = {id(e.server) for e in self._entries}
        self._acquired = [s for s in self._acquired if id(s) in held]

    def _find(self, requested: ServerConfig) -> _Entry | None:
        self._prune()
        for entry in reversed(self._entries):
            server = entry.server
            if server.host != requested.host:
                continue
            if requested.port is None:
                return entry
            if requested.strict_port:
                if server.port == requested.port:
                    return entry
            elif requested.port in (server.port, server.requested_port):
                return entry
        return None

    def _entry_of(self, server: StreamServer) -> _Entry | None:
        for entry in self._entries:
            if entry.server is server:
                return entry
        return None

    def _cancel_linger(self, entry: _Entry) -> None:
        if entry.linger is not None:
            entry.linger.cancel()
            entry.linger = None

    def _linger_expired(self, entry: _Entry) -> None:
        with self._lock:
            if entry.refs > 0 or entry not in self._entries or entry.linger is None:
                return
            if threading.current_thread() is not entry.linger:
                return  # a newer timer replaced this one
            entry.linger = None
            self._entries.remove(entry)
            entry.server.stop()

    def _forget_after_fork(self) -> None:
        self._lock = threading.RLock()
        self._entries = []
        self._acquired = []

    def __repr__(self) -> str:
        return f"<StreamServerManager servers={len(self._entries)} refs={self.refcount()} linger_s={self.linger_s}>"


def _check_linger(linger_s: object, *, allow_none: bool) -> None:
    if linger_s is None and allow_none:
        return
    if isinstance(linger_s, bool) or not isinstance(linger_s, (int, float)) or not 0 <= linger_s <= 86400:
        raise ValueError(
            f"linger_s={linger_s!r} must be seconds in [0, 86400]; 0 stops at the last release"
            + (", None keeps the server until the process exits" if allow_none else "")
        )


def _launch(config: ServerConfig) -> StreamServer:
    """Start a server: in a child process if ``config.isolated`` and that can run, else a thread."""
    if config.isolated:
        from lightning_stream.isolated import IsolatedStreamServer

        try:
            return IsolatedStreamServer(config).start()
        except ServerProcessError as error:
            logger.warning("lightning-stream: %s; serving from a thread of this process instead", error)
    return StreamServer(config).start()


def _requested(config: ServerConfig | None, kw: dict[str, Any]) -> tuple[ServerConfig, frozenset[str]]:
    """The validated config asked for, and the names the caller set explicitly."""
    if config is not None:
        if not isinstance(config, ServerConfig):
            raise TypeError(f"config={config!r} must be a ServerConfig (or pass options as keywords)")
        names = frozenset(f.name for f in dataclasses.fields(ServerConfig))
        return (config.replace(**kw) if kw else config), names
    return ServerConfig.from_env(**kw), frozenset(k for k, v in kw.items() if v is not None)


def _check_compatible(server: StreamServer, requested: ServerConfig, explicit: frozenset[str]) -> None:
    running = server.config
    for name in sorted(explicit - _KEY_FIELDS):
        mine, theirs = getattr(requested, name), getattr(running, name)
        if mine != theirs:

            def show(value: Any, name: str = name) -> str:
                return "<hidden>" if name == "token" else repr(value)

            raise ValueError(
                f"the server running at {server.url} has {name}={show(theirs)}, not {show(mine)}; "
                f"acquire it with the same {name}, release it first, or pass another port for a second server"
            )


def _remove_last(items: list[StreamServer], server: StreamServer) -> None:
    for i in range(len(items) - 1, -1, -1):
        if items[i] is server:
            del items[i]
            return


# ---- the process-wide manager -------------------------------------------------------------------

_MANAGERS: weakref.WeakSet[StreamServerManager] = weakref.WeakSet()
_global_lock = threading.Lock()
_global: StreamServerManager | None = None


def get_stream_server_manager() -> StreamServerManager:
    """The process-wide ``StreamServerManager`` (created on first use; thread-safe)."""
    global _global
    manager = _global
    if manager is None:
        with _global_lock:
            if _global is None:
                _global = StreamServerManager()
            manager = _global
    return manager


def get_stream_server(config: ServerConfig | None = None, **kw: Any) -> StreamServer:
    """``get_stream_server_manager().acquire(config, **kw)``."""
    return get_stream_server_manager().acquire(config, **kw)


def release_stream_server(server: StreamServer | None = None) -> bool:
    """``get_stream_server_manager().release(server)``."""
    return get_stream_server_manager().release(server)


def _after_fork_in_child() -> None:
    global _global_lock
    _global_lock = threading.Lock()
    for manager in list(_MANAGERS):
        manager._forget_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)

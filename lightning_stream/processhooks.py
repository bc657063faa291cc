"""Process hooks of stream servers: at exit and on SIGTERM stop them, in a fork child forget them.

At exit and on SIGTERM every live server of this process is stopped (the previous SIGTERM
handler is chained); in a child created by ``fork`` every server object is inert (never
serves, never removes the parent's registry entry). Servers are held weakly, through the
small :class:`Hooked` interface, so this module imports nothing of the server.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Hooked(Protocol):
    """What the hooks need of a server."""

    @property
    def state(self) -> str: ...

    def owned_here(self) -> bool: ...

    def stop(self) -> None: ...

    def _forget_after_fork(self) -> None: ...


def register(server: Hooked) -> None:
    """Stop ``server`` at exit and on SIGTERM, forget it in a fork child (until :func:`discard`)."""
    _LIVE.add(server)
    install()


def discard(server: Hooked) -> None:
    _LIVE.discard(server)


_LIVE: weakref.WeakSet[Hooked] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None


def stop_all_servers() -> int:
    """Stop every running server of this process (atexit, SIGTERM); returns how many."""
    stopped = 0
    for server in list(_LIVE):
        try:
            if server.owned_here() and server.state == "running":
                server.stop()
                stopped += 1
        except Exception:
            logger.exception("error stopping %r", server)
    return stopped


def install() -> None:
    """atexit and (from the main thread) SIGTERM stop every live server; idempotent."""
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

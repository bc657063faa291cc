"""A logdir's first read, started before the server exists: ``lightning-stream serve`` overlaps it with its imports.

The command spends ~0.2 s importing the server (aiohttp is most of it) before it can watch anything;
reading a million-point logdir takes ~0.05 s more, and the C decoder reads without the GIL
(``_speedups.c``), so on a second core the read is done by the time the server asks for it.
:func:`start` begins the read in a thread; the server's first ``watch`` of that logdir takes the
watcher and its points (:func:`take`) instead of scanning again. One process, one read per
logdir, handed over once: a read nobody takes is dropped with the process (the CLI always takes it).

Only the first watch of a server may take it: the read did not leave directories to other watched
logdirs (``logdirs.py``'s nesting rules), so ``logdirs.py`` takes it only when nothing else is watched
or retired there yet, and scans as usual otherwise.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading

from lightning_stream.scalars import ScalarBatch
from lightning_stream.threads import start_thread
from lightning_stream.watcher import LogdirWatcher  # here, not in the thread: two importing threads slow each other

__all__ = ["start", "take"]

Read = tuple[LogdirWatcher, list[ScalarBatch]]
"""A watcher of the logdir (not watching yet) and the points of its first scan."""

SWITCH_INTERVAL_S = 0.0005
"""The interpreter's switch interval while a read runs (default 5 ms): the read's short Python steps between
its C calls each wait for the GIL behind the importing thread, up to the switch interval."""

_reads: dict[str, tuple[float, concurrent.futures.Future[Read]]] = {}
"""Absolute logdir -> (poll interval of its watcher, the read), until taken."""
_lock = threading.Lock()
_running: list[float] = []
"""One entry per read running: the switch interval from before the first, put back by the last."""


def start(logdir: str | os.PathLike[str], *, poll_interval_s: float) -> concurrent.futures.Future[Read]:
    """Begin the first scan of a local ``logdir`` in a thread (once per logdir until taken); its future."""
    path = os.path.abspath(os.fspath(logdir))
    future: concurrent.futures.Future[Read] = concurrent.futures.Future()
    with _lock:
        if path in _reads:
            return _reads[path][1]
        _reads[path] = (poll_interval_s, future)
        _running.append(_running[0] if _running else sys.getswitchinterval())
        sys.setswitchinterval(min(_running[0], SWITCH_INTERVAL_S))

    def read() -> None:
        try:
            watcher = LogdirWatcher(path, poll_interval_s=poll_interval_s)
            outcome = (watcher, watcher.scan())
        except BaseException as exc:  # the server's own scan meets (and reports) it again
            _read_ended()
            future.set_exception(exc)
        else:
            _read_ended()
            future.set_result(outcome)

    start_thread(threading.Thread(target=read, name="lightning-stream-first-read", daemon=True))
    return future


def _read_ended() -> None:
    with _lock:
        switch = _running.pop()
        if not _running:
            sys.setswitchinterval(switch)


def take(path: str, *, prefix: str | None, poll_interval_s: float) -> concurrent.futures.Future[Read] | None:
    """The read :func:`start` began for the absolute ``path``, if its watcher has these settings; else None.

    Either way the read is forgotten: it is handed over once, and one that does not fit is not kept.
    """
    with _lock:
        started = _reads.pop(path, None)
    if started is None or prefix is not None or started[0] != poll_interval_s:
        return None  # started reads have no prefix (the CLI's)
    return started[1]

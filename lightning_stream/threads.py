"""Starting our threads so that process signals always reach the main thread.

Linux delivers a process-directed signal (``kill PID``: SIGTERM, SIGINT) to any thread
that does not block it. CPython runs Python signal handlers only in the main thread, and
a signal that lands on another thread does not wake a main thread blocked in ``sleep``
or ``wait``: the handler (our SIGTERM cleanup, Lightning's, the user's) then waits until
the main thread runs Python code again, possibly never. Every thread we start blocks these
signals; threads they start (asyncio's executor workers) inherit the mask.
``tests/test_lifecycle_processes.py`` checks the masks of our threads.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

MAIN_THREAD_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)


def start_thread(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` with the main thread's signals blocked in it; returns it."""
    with _blocked(MAIN_THREAD_SIGNALS):
        thread.start()  # the new thread inherits the mask in force here
    return thread


@contextlib.contextmanager
def _blocked(signals: frozenset[int]) -> Iterator[None]:
    """Block ``signals`` in the calling thread for the ``with`` body (POSIX; a no-op on Windows)."""
    if not hasattr(signal, "pthread_sigmask") or not signals:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal that came meanwhile is delivered now

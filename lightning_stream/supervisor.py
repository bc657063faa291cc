"""Health supervisor: restart a server whose loop died or whose ``/health`` stopped answering.

Not a file watcher (that is ``watcher.py``): one light daemon thread per server, given
callables and importing nothing of the server (an owned object never calls its owner's
privates). Every ``interval_s`` it checks, in this order:

1. ``alive()`` — the server's loop runs; if not, restart at once;
2. ``probe(timeout)`` — ``GET /health`` answers (timeout ``max(0.5, min(interval_s, 5))`` s);
   after ``failures`` misses in a row (a busy loop may miss one), restart. A miss while
   ``loop_answers(timeout)`` is true is a server that is alive but saturated (every
   connection slot or descriptor taken): it is logged at most once a minute and never
   restarted, since a restart would only drop every client it serves.

``restart(reason)`` does the restart (and logs it, once); it returns False when it gave
up this round (the server is stopping, recovered meanwhile, or its port was taken), and
the supervisor tries again next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lightning_stream.threads import start_thread

logger = logging.getLogger(__name__)

SATURATED_LOG_INTERVAL_S = 60.0


class Supervisor:
    """Check one server through callables; see the module docstring.

    Args:
        alive: whether the server's loop runs.
        probe: ``probe(timeout_s)``: whether ``/health`` answered within the timeout.
        loop_answers: ``loop_answers(timeout_s)``: whether the loop runs a callback in that time.
        restart: ``restart(reason)``: replace the server; True if it did.
        interval_s: seconds between checks.
        failures: ``/health`` misses in a row that mean a hung server.
        name: what the log lines call the server (``"port 8765"``).
    """

    def __init__(
        self,
        *,
        alive: Callable[[], bool],
        probe: Callable[[float], bool],
        loop_answers: Callable[[float], bool],
        restart: Callable[[str], bool],
        interval_s: float,
        failures: int = 2,
        name: str = "",
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s!r} must be > 0 seconds")
        if failures < 1:
            raise ValueError(f"failures={failures!r} must be >= 1")
        self._alive = alive
        self._probe = probe
        self._loop_answers = loop_answers
        self._restart = restart
        self.interval_s = interval_s
        self.failures = failures
        self.name = name
        self.timeout_s = max(0.5, min(interval_s, 5.0))
        self.checks = 0
        self._misses = 0
        self._saturated_logged = -SATURATED_LOG_INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lightning-stream-supervisor {name}", daemon=True)

    def start(self) -> None:
        start_thread(self._thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop checking and wait (bounded) for a check or restart in progress to finish.

        Bounded because ``stop()`` may run in a SIGTERM handler while the interrupted
        main thread holds the server lock a restart in progress waits for; the restart
        then finds the server stopped and gives up.
        """
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:
                logger.exception("lightning-stream supervisor check failed")

    def _saturated(self) -> None:
        self._misses = 0
        now = time.monotonic()
        if now - self._saturated_logged >= SATURATED_LOG_INTERVAL_S:
            self._saturated_logged = now
            logger.warning(
                "lightning-stream server on %s is alive but /health got no answer (all connections "
                "or descriptors taken?); not restarting it. Raise 'ulimit -n' or lower max_clients",
                self.name,
            )

    def check(self) -> str | None:
        """One check; returns why it restarted the server, or None when healthy."""
        self.checks += 1
        reason: str | None = None
        if not self._alive():
            reason = "the server thread died"
        elif not self._probe(self.timeout_s):
            if self._loop_answers(self.timeout_s):
                self._saturated()  # alive but full (every connection or descriptor taken): no restart
            else:
                self._misses += 1
                if self._misses >= self.failures:
                    reason = f"/health did not answer {self._misses} times in a row"
        else:
            self._misses = 0
        if reason is None or self._stop.is_set():
            return None
        # restart() re-checks under the server's lock (a force_restart() in progress looks like a
        # dead thread from out here) and logs the restart it makes.
        if self._restart(reason):
            self._misses = 0
            return reason
        return None

"""Health watchdog: restart a server whose thread died or whose ``/health`` stopped answering.

One light daemon thread per server. Every ``interval_s`` it checks, in this order:

1. the server thread is alive and its loop running — if not, restart at once;
2. ``GET /health`` answers (timeout ``max(0.5, min(interval_s, 5))`` s) — after
   ``failures`` misses in a row (a busy loop may miss one), restart. A miss while the
   server loop still runs a callback in that time (``StreamServer.loop_answers``) is a
   server that is alive but saturated (every connection slot or descriptor taken): it
   is logged at most once a minute and never restarted, since a restart would only
   drop every client it serves.

A restart replaces the whole incarnation on the *same* port (``StreamServer`` keeps
the watched logdirs and re-reads them), is logged at WARNING and counted in
``StreamServer.restarts`` (``/health`` and ``/metrics`` show it). If the port was
taken in between, the restart fails, is logged, and is tried again next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from lightning_stream.registry import health_check
from lightning_stream.threads import start_thread

if TYPE_CHECKING:
    from lightning_stream.server import StreamServer

logger = logging.getLogger(__name__)

SATURATED_LOG_INTERVAL_S = 60.0


class Watchdog:
    """Watch one ``StreamServer``; see the module docstring."""

    def __init__(self, server: StreamServer, *, interval_s: float, failures: int = 2) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s!r} must be > 0 seconds")
        if failures < 1:
            raise ValueError(f"failures={failures!r} must be >= 1")
        self.server = server
        self.interval_s = interval_s
        self.failures = failures
        self.timeout_s = max(0.5, min(interval_s, 5.0))
        self.checks = 0
        self._misses = 0
        self._saturated_logged = -SATURATED_LOG_INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lightning-stream-watchdog-{server.port}", daemon=True)

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
                logger.exception("lightning-stream watchdog check failed")

    def _saturated(self) -> None:
        self._misses = 0
        now = time.monotonic()
        if now - self._saturated_logged >= SATURATED_LOG_INTERVAL_S:
            self._saturated_logged = now
            logger.warning(
                "lightning-stream server on port %d is alive but /health got no answer (all connections "
                "or descriptors taken?); not restarting it. Raise 'ulimit -n' or lower max_clients",
                self.server.port,
            )

    def check(self) -> str | None:
        """One check; returns why it restarted the server, or None when healthy."""
        server = self.server
        self.checks += 1
        reason: str | None = None
        if not server.is_alive():
            reason = "the server thread died"
        elif health_check(server.host, server.port, timeout=self.timeout_s) is None:
            if server.loop_answers(self.timeout_s):
                self._saturated()  # alive but full (every connection or descriptor taken): no restart
            else:
                self._misses += 1
                if self._misses >= self.failures:
                    reason = f"/health did not answer {self._misses} times in a row"
        else:
            self._misses = 0
        if reason is None or self._stop.is_set():
            return None
        # Logged only once the restart happened: _watchdog_restart re-checks under the server's
        # lock, and a force_restart() in progress looks like a dead thread from out here.
        if server._watchdog_restart(reason):
            logger.warning("lightning-stream watchdog: %s on port %d; restarted it", reason, server.port)
            self._misses = 0
            return reason
        return None

"""Event-loop lag: how late ``asyncio.sleep(interval)`` wakes up.

The seed system's failure came from a blocked event loop, so the server
measures its own loop all the time and reports it in ``/health`` and
``/metrics``. One tiny task per server; it costs one wake-up per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class LoopLagMonitor:
    """Measure scheduling delay of the running loop.

    ``lag_ms`` is the maximum lag of the last ``window`` samples, so a single
    long stall stays visible for about ``interval_s * window`` seconds.
    ``max_lag_ms`` is the worst lag seen since ``start()``.
    """

    def __init__(self, interval_s: float = 0.1, window: int = 10) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s!r} must be > 0 seconds")
        if window < 1:
            raise ValueError(f"window={window!r} must be >= 1 sample")
        self.interval_s = interval_s
        self._samples: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None
        self.max_lag_ms = 0.0
        self.samples_total = 0

    @property
    def lag_ms(self) -> float:
        """Recent lag in milliseconds (max over the last few samples; 0 before the first)."""
        return max(self._samples, default=0.0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sampling; call on the loop to measure. Idempotent."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lightning-stream-looplag")

    async def stop(self) -> None:
        """Stop sampling and wait for the task to end. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, (loop.time() - before - self.interval_s) * 1000.0)
            self._samples.append(lag)
            self.samples_total += 1
            self.max_lag_ms = max(self.max_lag_ms, lag)

"""Compact storage of one (run, tag) series: three typed arrays, 24 bytes per point.

Steps live in ``array('q')``, wall times and values in ``array('d')``: no Python
object per point, so a million points hold ~24 MB (plus array growth slack of
at most 1/16) instead of ~200 MB of tuples.

Restarts (TensorBoard's ``purge_orphaned_data``, applied per series): held steps
are kept strictly increasing. A new point whose step is ``<=`` the series' last
step means the run was resumed from a checkpoint (or written with
``purge_step``): every held point with ``step >= new step`` is dropped, then the
new point is appended. So re-sending a point is idempotent, and a resumed run
shows its new curve instead of a zig-zag. Clients that keep their own copy of
a live series apply the same rule to streamed points and stay identical.

How this relates to TensorBoard (``event_accumulator._Purge``): TensorBoard keeps
``step < new step`` too, but triggers on a step below the run's most recent step
(old files) or on a ``SessionLog.START`` event (``SummaryWriter(purge_step=N)``
writes one), purging every tag at once. We trigger per series and also on an
equal step (a re-logged step replaces the point instead of doubling it). The
difference shows only for a tag the resumed run never logs again: TensorBoard
drops its points past the restart step, we keep them.

Decimation: when the hub's memory budget is exceeded it calls
:meth:`Series.decimate`, which keeps the first point, the newest quarter of the
series untouched, and of the older points only the minimum and maximum value
of each bucket of :data:`BUCKET` points. Repeated decimation makes old history
progressively coarser while extrema and the live end stay exact.
:meth:`Series.window` thins a queried window with the same bucket rule
(:func:`bucket_extremes`), bucket width chosen from the caller's ``max_points``.
"""

from __future__ import annotations

import operator
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from lightning_stream.reader import speedup
from lightning_stream.scalars import ScalarBatch

if TYPE_CHECKING:
    import numpy as np

BYTES_PER_POINT = 24  # int64 step + float64 wall time + float64 value
BUCKET = 4  # old points per bucket: 4 -> 2 (min, max)
MIN_DECIMATE = 64  # shorter series are never decimated (bounds the per-series floor)
_NUMPY_MIN = 32  # shorter batches are checked in pure Python even when numpy is loaded


class Series:
    """Points of one (run, tag), steps strictly increasing (see the module's purge rule)."""

    __slots__ = ("_shared", "run", "steps", "tag", "values", "wall_times")

    def __init__(self, run: str, tag: str) -> None:
        self.run = run
        self.tag = tag
        self.steps: array[int] = array("q")
        self.wall_times: array[float] = array("d")
        self.values: array[float] = array("d")
        self._shared = False  # the arrays were adopted from a caller: replace them, never mutate them

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    @property
    def last_wall_time(self) -> float | None:
        return self.wall_times[-1] if self.wall_times else None

    def nbytes(self) -> int:
        """Bytes allocated by the three arrays (capacity, not just length)."""
        return sum(sys.getsizeof(a) - _ARRAY_HEADER for a in (self.steps, self.wall_times, self.values))

    def extend(
        self,
        steps: array[int],
        wall_times: array[float],
        values: array[float],
        rewinds: list[tuple[int, int]] | None = None,
    ) -> int:
        """Append points in order, applying the purge rule; return how many held points were purged.

        ``rewinds``, if given, receives ``(index, step)`` for every point that went back *below*
        the held last step (a resumed run), not for a step logged again (that replaces one point).

        An empty series adopts the three arrays instead of copying them (a large initial scan is
        then held once, not twice); it never mutates adopted arrays in place (see :meth:`_own`), so
        whoever else holds them (the hub's pending batch, a replay message) keeps what it was given.
        """
        n = len(steps)
        if not (len(wall_times) == len(values) == n):
            raise ValueError(
                f"batch for {self.run!r}/{self.tag!r} has {n} steps, {len(wall_times)} wall times and "
                f"{len(values)} values; the three arrays must have the same length"
            )
        if n == 0:
            return 0
        if not isinstance(steps, array) or steps.typecode != "q":
            steps = array("q", steps)
        if not isinstance(wall_times, array) or wall_times.typecode != "d":
            wall_times = array("d", wall_times)
        if not isinstance(values, array) or values.typecode != "d":
            values = array("d", values)
        purged = 0
        start = 0
        # Segments of strictly increasing steps; a break starts a new segment that may purge.
        for end in (*_breaks(steps), n):
            first = steps[start]
            if self.steps and first <= self.steps[-1]:
                if rewinds is not None and first < self.steps[-1]:
                    rewinds.append((start, first))
                cut = bisect_left(self.steps, first)
                purged += len(self.steps) - cut
                self._truncate(cut)
            if start == 0 and end == n:
                self._append(steps, wall_times, values, shared=True)
            else:
                self._append(steps[start:end], wall_times[start:end], values[start:end], shared=False)
            start = end
        return purged

    def _append(self, steps: array[int], wall_times: array[float], values: array[float], *, shared: bool) -> None:
        if not self.steps:
            self.steps, self.wall_times, self.values = steps, wall_times, values
            self._shared = shared
        elif self._shared:  # one new allocation holding both parts; the adopted arrays stay untouched
            self.steps = self.steps + steps
            self.wall_times = self.wall_times + wall_times
            self.values = self.values + values
            self._shared = False
        else:
            self.steps.extend(steps)
            self.wall_times.extend(wall_times)
            self.values.extend(values)

    def _truncate(self, keep: int) -> None:
        if self._shared:
            self.steps = self.steps[:keep]
            self.wall_times = self.wall_times[:keep]
            self.values = self.values[:keep]
            self._shared = False
        else:
            del self.steps[keep:]
            del self.wall_times[keep:]
            del self.values[keep:]

    def query(self, since_step: int | None = None, limit: int | None = None) -> ScalarBatch:
        """Copy of the points with ``step > since_step`` (all if None), the first ``limit`` of them."""
        start = 0 if since_step is None else bisect_right(self.steps, since_step)
        end = len(self.steps) if limit is None else min(len(self.steps), start + limit)
        return ScalarBatch(
            self.run, self.tag, self.steps[start:end], self.wall_times[start:end], self.values[start:end]
        )

    def decimate(self) -> int:
        """Thin old points (see module docstring); return how many points were dropped (0 if too short)."""
        n = len(self.steps)
        if n < MIN_DECIMATE:
            return 0
        tail_start = n - max(1, n // 4)
        nb = (tail_start - 1) // BUCKET  # whole buckets in [1, tail_start)
        if nb == 0:
            return 0
        old_end = 1 + nb * BUCKET
        import numpy as np  # lazily: only under memory pressure (the import alone costs ~15 MiB of RSS)

        vals = np.frombuffer(self.values, dtype=np.float64)
        kept = bucket_extremes(vals, 1, old_end, BUCKET)
        index = np.concatenate((np.zeros(1, dtype=np.int64), kept, np.arange(old_end, n, dtype=np.int64)))
        steps_np = np.frombuffer(self.steps, dtype=np.int64)
        times_np = np.frombuffer(self.wall_times, dtype=np.float64)
        # New arrays (not del/slice in place) so the freed capacity really goes back.
        self.steps = _from_np("q", steps_np[index])
        self.wall_times = _from_np("d", times_np[index])
        self.values = _from_np("d", vals[index])
        self._shared = False
        return n - len(index)

    def window(
        self, start_step: int | None = None, end_step: int | None = None, max_points: int | None = None
    ) -> Window:
        """Copy of the points with ``start_step <= step <= end_step`` (either bound None: open).

        With ``max_points`` (>= 2) and more points than that in the window, it is thinned the way
        :meth:`decimate` thins old history, but with wider buckets: the first and last point of the
        window stay, and the points between are cut into at most ``(max_points - 2) // 2`` buckets
        of equal width of which only each one's minimum and maximum value stay. So at most
        ``max_points`` points come back, and every extreme a chart of that many pixels could show
        (a spike, a NaN) is among them.
        """
        steps = self.steps
        lo = 0 if start_step is None else bisect_left(steps, start_step)
        hi = len(steps) if end_step is None else bisect_right(steps, end_step)
        hi = max(lo, hi)
        n = hi - lo
        if max_points is None or n <= max_points:
            batch = ScalarBatch(self.run, self.tag, steps[lo:hi], self.wall_times[lo:hi], self.values[lo:hi])
            return Window(batch, decimated=False)
        if max_points < 2:
            raise ValueError(f"max_points={max_points!r} must be >= 2 (the first and last point of the window)")
        import numpy as np  # lazily, as in decimate(): a standalone server without numpy-using clients stays lean

        buckets = (max_points - 2) // 2
        inner = n - 2
        width = -(-inner // buckets) if buckets else 0  # ceil: at most `buckets` buckets cover the inner points
        vals = np.frombuffer(self.values, dtype=np.float64)
        kept = bucket_extremes(vals, lo + 1, hi - 1, width) if width else np.empty(0, dtype=np.int64)
        index = np.concatenate((np.array([lo], dtype=np.int64), kept, np.array([hi - 1], dtype=np.int64)))
        batch = ScalarBatch(
            self.run,
            self.tag,
            _from_np("q", np.frombuffer(steps, dtype=np.int64)[index]),
            _from_np("d", np.frombuffer(self.wall_times, dtype=np.float64)[index]),
            _from_np("d", vals[index]),
        )
        return Window(batch, decimated=True)


class Window(NamedTuple):
    """Points of one series in a step window (:meth:`Series.window`), and whether they were thinned."""

    batch: ScalarBatch
    decimated: bool


def bucket_extremes(values: np.ndarray, start: int, end: int, width: int) -> np.ndarray:
    """Sorted indices of the minimum and maximum of each ``width``-wide bucket of ``values[start:end]``.

    The last bucket may be narrower. ``argmin``/``argmax`` return the first NaN of a bucket, so a
    divergence stays visible after thinning. Shared by memory decimation and windowed queries.
    """
    import numpy as np

    if end <= start:
        return np.empty(0, dtype=np.int64)
    full = (end - start) // width
    parts = []
    if full:
        buckets = values[start : start + full * width].reshape(full, width)
        base = start + np.arange(full, dtype=np.int64) * width
        parts += [base + np.argmin(buckets, axis=1), base + np.argmax(buckets, axis=1)]
    rest = start + full * width
    if rest < end:
        tail = values[rest:end]
        parts.append(np.array([rest + int(np.argmin(tail)), rest + int(np.argmax(tail))], dtype=np.int64))
    kept: np.ndarray = np.unique(np.concatenate(parts))  # sorted: steps stay increasing
    return kept


def _breaks(steps: array[int]) -> list[int]:
    """Indices ``i`` where ``steps[i] <= steps[i - 1]`` (where a restart inside a batch begins).

    The C extension's ``step_breaks`` when it is built (one pass over the buffer, ~1 ms for a million
    steps). Else numpy, only when the process has already imported it (torch, the user's code): it is
    ~70x faster than Python, but importing it just for this would cost ~15 MiB of RSS in a standalone
    server. Without either, a strictly increasing batch (the usual case) costs one pass in C-level ``map``.
    """
    n = len(steps)
    if n < 2:
        return []
    if _step_breaks is not None:
        return _step_breaks(steps)
    np_module = sys.modules.get("numpy")
    if np_module is not None and n > _NUMPY_MIN:
        try:
            return _breaks_numpy(np_module, steps)
        except AttributeError:  # numpy is being imported by another thread right now
            pass
    return _breaks_python(steps)


_step_breaks: Callable[[array[int]], list[int]] | None = speedup("step_breaks")


def _breaks_python(steps: array[int]) -> list[int]:
    values = steps.tolist()  # ints made in one C loop: ~30 ns per step in all, 1M steps in ~30 ms
    if all(map(operator.lt, values, islice(values, 1, None))):
        return []
    return [i for i in range(1, len(values)) if values[i] <= values[i - 1]]


def _breaks_numpy(np_module: Any, steps: array[int]) -> list[int]:
    as_np = np_module.frombuffer(steps, dtype=np_module.int64)
    found: list[int] = (np_module.flatnonzero(as_np[1:] <= as_np[:-1]) + 1).tolist()
    return found


def _from_np(typecode: str, data: np.ndarray) -> array:  # type: ignore[type-arg]
    out = array(typecode)
    out.frombytes(data.tobytes())
    return out


_ARRAY_HEADER = sys.getsizeof(array("q"))  # empty array: header only, excluded from nbytes()

"""Watch a TensorBoard logdir: find its runs and event files, and read what each file gains.

Runs are what TensorBoard calls runs: every directory under the logdir holding a file whose name
contains ``tfevents``, named by its path relative to the logdir (``.`` for the logdir itself).
*Every* event file of a run is read, not only the newest: TensorBoard's ``DirectoryWatcher``
follows only the last file, so writes to an older one (two writers, a resumed job) are lost there.

Change detection (measured with ``benchmarks/bench_watch_idle.py``, 100 idle runs; figures in
``benchmarks/README.md``): the default, ``"auto"``, combines

* notifications: on Linux an inotify descriptor on the event loop (``_inotify.py``), which wakes a
  scan within a millisecond of a write and costs nothing while idle; elsewhere ``watchfiles``
  (FSEvents, ReadDirectoryChangesW) with a 5 ms step. ``watchfiles`` is not used on Linux because
  its Rust loop wakes every ``step`` ms, costing ~0.5 % of a core idle at the 5 ms step that low
  latency needs (``change_detection="watchfiles"`` still selects it);
* a ``stat`` poll every ``poll_interval_s``: the safety net for what notifications miss (writes by
  another host on a network filesystem, a watch limit reached). When notifications are
  unavailable (``fs.inotify.max_user_watches`` exhausted, a non-local ``FileSystem``,
  ``change_detection="poll"``) the poll is adaptive instead: every 20 ms right after data arrived,
  doubling while idle up to ``poll_interval_s``.

A remote logdir (an fsspec URL such as ``s3://bucket/logs``, see ``objectstore.py``) is always polled
adaptively, each poll one listing, from ``REMOTE_FAST_POLL_S`` after data up to ``poll_interval_s``.

Why one module of this length: change detection (inotify, watchfiles, safety poll) and the
busy-run coalescing policy are one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from lightning_stream.filesystem import DEFAULT_FILESYSTEM, EVENT_FILE_MARKER, FileSystem, LocalFileSystem
from lightning_stream.objectstore import FsspecFileSystem, is_url, open_url
from lightning_stream.reader import STAT_KEYS, EventFileReader
from lightning_stream.scalars import ScalarBatch

__all__ = ["ChangeDetection", "LogdirWatcher"]

log = logging.getLogger(__name__)

ChangeDetection = Literal["auto", "inotify", "watchfiles", "poll"]
Retired = tuple[str, dict[str, EventFileReader]]
"""A run directory's name and its readers (with their offsets), handed from one watcher to the next."""

FAST_POLL_S = 0.02
"""Poll interval right after data arrived; it doubles on every empty scan up to ``poll_interval_s``."""
BUSY_GAP_S = 0.02
"""Least time between two reads that found data: bounds the watcher's share of a busy process."""
BUSY_STEPS_PER_S = 50.0
"""A series written up to this fast is read within ``BUSY_GAP_S`` of each write. A faster one is read
in bigger batches, the gap growing with its rate up to ``MAX_BUSY_GAP_S``: every read wakes the server
and, through it, every client, and each wake-up costs ~0.15 ms of CPU on a small VM, beside training
(``benchmarks/bench_overhead.py``)."""
LIVE_GAP_S = 0.025
"""Longest gap between reads of a run written up to ``LIVE_STEPS_PER_S``, unless the sink asks for longer
(the hub does with more than one client, 32 ms with two): a budget of 40 reads a second (fewer than a
50 steps/s run costs, one read per write), the first write after a quiet spell read at once.
A point waits for its read half the gap on average, so this is what keeps such a run's latency at p50
≤ 20 ms (``benchmarks/bench_latency.py``; the gap used to grow with the rate to 80 ms at 200 steps/s)."""
LIVE_STEPS_PER_S = 200.0
"""Up to this rate per series a run is read at most ``LIVE_GAP_S`` apart; beyond it the gap grows again,
by ``FAST_GAP_PER_STEP_S`` per step/s, up to ``MAX_BUSY_GAP_S``."""
FAST_GAP_PER_STEP_S = 0.001
"""Beyond ``LIVE_STEPS_PER_S``, each step/s more adds this to the gap: 125 ms at 300 steps/s, 325 ms at
500, ``MAX_BUSY_GAP_S`` from 675. Each read wakes the server and every client, a cost per second that
does not shrink with the step: on a busy machine it comes out of training (``bench_overhead.py``, ~900
steps/s with 10 clients: the training's run-queue wait grows with the reads per second). A curve drawn
2 to 8 times a second still looks live; the latency goal (p50 <= 20 ms) is for up to ``LIVE_STEPS_PER_S``."""
MAX_BUSY_GAP_S = 0.5
"""Longest gap between reads of a busy run (a point then waits at most this long to be read), unless the
sink allows longer (``watch(max_busy_gap_s=...)``): the fastest run is still read twice a second."""
INLINE_READ_FILES = 4
"""A notification naming at most this many local files is read on the loop, not in a worker thread."""
INLINE_READ_POINTS = 8192
"""...at most this many points of it (a few ms at worst); a bigger backlog goes to a worker thread."""
REMOTE_FAST_POLL_S = 0.2
"""The same for a remote logdir: each poll is a listing request (billed on S3), so not faster than this."""
SCAN_SLICE_POINTS = 262_144
"""``watch`` hands a backlog (a big logdir at start) to its sink in slices of about this many points,
so the reader's arrays for one slice (~6 MiB) are freed before the next is read."""
NOTIFY_STEP_MS = 5
"""watchfiles debounce: changes are handed over once no new one arrived for this long."""
NOTIFY_MAX_DEBOUNCE_MS = 50
"""...or at the latest after this long, while a file is being written continuously."""


class LogdirWatcher:
    """Runs and scalars of one logdir; ``scan()`` is synchronous, ``watch()`` drives it on a loop."""

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        prefix: str | None = None,
        fs: FileSystem | None = None,
        poll_interval_s: float = 1.0,
        change_detection: ChangeDetection = "auto",
        storage_options: Mapping[str, Any] | None = None,
        skip: Callable[[str], bool] | None = None,
        adopt: Callable[[str], Retired | None] | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s!r}")
        if change_detection not in ("auto", "inotify", "watchfiles", "poll"):
            raise ValueError(
                f"change_detection must be 'auto', 'inotify', 'watchfiles' or 'poll', got {change_detection!r}"
            )
        self.remote = is_url(logdir)
        """Whether ``logdir`` is an fsspec URL (object storage): polled, paths are URLs."""
        if self.remote:
            url = os.fspath(logdir)
            if fs is None:
                fs, url = open_url(url, storage_options)
            elif isinstance(fs, FsspecFileSystem):
                url = fs.canonical(url)
            self.logdir = url.rstrip("/")
        else:
            self.logdir = os.path.abspath(os.fspath(logdir))
        self.prefix = prefix.strip("/") if prefix else None
        self.poll_interval_s = poll_interval_s
        self.change_detection: ChangeDetection = change_detection
        self._fs: FileSystem = fs if fs is not None else DEFAULT_FILESYSTEM
        self._skip = skip
        """Asked for a directory holding event files this watcher does not read yet (again on later
        scans while it says yes): True leaves it to another watcher (the server's nested logdirs)."""
        self._adopt = adopt
        """Asked once per new run directory: the run name and readers (with their offsets) of an
        earlier watcher that read it, to continue where it stopped instead of re-reading."""
        self._dir_names: dict[str, str] = {}  # run directory -> run name
        self._new_hparams: dict[str, dict[str, Any]] = {}
        self._readers: dict[str, EventFileReader] = {}
        self._runs: dict[str, str] = {}
        self._retired: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._scan_lock = threading.Lock()
        self.notifications_active = False
        """Whether file-system notifications currently wake scans (False: polling only)."""
        self._notify_degraded: Callable[[], bool] = _never
        self._pause_notify: Callable[[set[str]], None] = _nothing
        self._resume_notify: Callable[[], None] = _nothing
        self.has_more = False
        """Set by ``scan(max_points=...)`` when it stopped before reading everything new."""

    def nest(self, *, skip: Callable[[str], bool] | None, adopt: Callable[[str], Retired | None] | None) -> None:
        """Set ``skip`` and ``adopt`` (see ``__init__``) after the fact: for a watcher whose first scan ran
        before the server that now watches with it existed (``firstread.py``)."""
        with self._scan_lock:
            self._skip, self._adopt = skip, adopt

    def run_name(self, directory: str) -> str:
        """The run name of a directory under the logdir (relative path, ``/``-separated)."""
        if self.remote:
            rel = directory[len(self.logdir) + 1 :] if directory.startswith(self.logdir + "/") else "."
        else:
            rel = os.path.relpath(directory, self.logdir)
        if rel == ".":
            return self.prefix or "."
        rel = rel.replace(os.sep, "/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def runs(self) -> dict[str, str]:
        """Run name → directory, for every run discovered so far."""
        return dict(self._runs)

    def take_hparams(self) -> dict[str, dict[str, Any]]:
        """Run name → hparams (``save_hyperparameters()`` and TensorBoard's hparams plugin), for the
        runs whose hparams were read since the last call."""
        if not self._new_hparams:
            return {}
        with self._scan_lock:
            found, self._new_hparams = self._new_hparams, {}
            return found

    @property
    def stats(self) -> dict[str, int]:
        """Reader counters summed over every file (including files since removed), plus ``files``/``runs``."""
        total = dict(self._retired)
        for reader in list(self._readers.values()):
            for key, value in reader.stats.items():
                total[key] = total.get(key, 0) + value
        total["files"] = len(self._readers)
        total["runs"] = len(self._runs)
        return total

    def scan(self, max_points: int | None = None, *, only: Iterable[str] | None = None) -> list[ScalarBatch]:
        """Discover runs and files, and return every point written since the last scan.

        Blocking (file I/O): call it from a worker thread. Files are read in name order, which for
        TensorBoard's ``events.out.tfevents.<time>.<host>...`` names is creation order. With
        ``max_points``, stops once about that many points are gathered and sets ``has_more``: a
        large logdir is then handed over in slices instead of all at once (bounded memory). With
        ``only``, reads just those event files (what notifications said changed) without listing
        the logdir: ~3 µs per file instead of ~1.5 ms for a full scan of 100 runs.
        """
        with self._scan_lock:
            if only is None:
                paths = self._fs.list_event_files(self.logdir)
                present = set(paths)
                for path in [p for p in self._readers if p not in present]:
                    for key, value in self._readers.pop(path).stats.items():
                        self._retired[key] += value
            else:
                paths = sorted(p for p in only if p in self._readers or self._is_event_file_here(p))
            skipped: set[str] = set()
            for path in paths:
                if path not in self._readers:
                    directory = path.rpartition("/")[0] if self.remote else os.path.dirname(path)
                    if self._skip is not None and self._skip(directory):
                        skipped.add(path)
                        continue
                    run = self._dir_names.get(directory)
                    if run is None:
                        run = self._dir_names[directory] = self._new_run(directory)
                    if path not in self._readers:  # (an adopted reader is kept, with its offset)
                        self._readers[path] = EventFileReader(path, run, fs=self._fs)
            if skipped:
                paths = [p for p in paths if p not in skipped]
            batches: list[ScalarBatch] = []
            budget = max_points
            self.has_more = False
            for path in paths:
                if budget is not None and budget <= 0:
                    self.has_more = True
                    break
                reader = self._readers[path]
                got = reader.read(budget)
                batches.extend(got)
                if reader.hparams_changed:  # files are read in creation order: the newest hparams win
                    reader.hparams_changed = False
                    if reader.hparams is not None:
                        self._new_hparams[reader.run] = reader.hparams
                if budget is not None:
                    budget -= sum(len(b) for b in got)
                    self.has_more = self.has_more or not reader.at_end
            return batches

    def _new_run(self, directory: str) -> str:
        """Name a run directory seen for the first time; adopt an earlier watcher's readers of it."""
        retired = self._adopt(directory) if self._adopt is not None else None
        if retired is None:
            run = self.run_name(directory)
        else:
            run, readers = retired
            for path, reader in readers.items():
                self._readers.setdefault(path, reader)
        self._runs.setdefault(run, directory)
        return run

    def retire(self) -> dict[str, Retired]:
        """Run directory -> (run name, readers) of everything read: for a later watcher to ``adopt``.

        Call only once this watcher is stopped (its readers move on with their offsets).
        """
        with self._scan_lock:
            out: dict[str, Retired] = {}
            for path, reader in self._readers.items():
                directory = path.rpartition("/")[0] if self.remote else os.path.dirname(path)
                out.setdefault(directory, (reader.run, {}))[1][path] = reader
            self._readers = {}
            return out

    def _is_event_file_here(self, path: str) -> bool:
        return EVENT_FILE_MARKER in os.path.basename(path) and path.startswith(self.logdir + os.sep)

    async def watch(
        self, sink: Callable[[list[ScalarBatch]], None], *, max_busy_gap_s: Callable[[], float] = lambda: 0.0
    ) -> None:
        """Scan whenever something changes, and hand new points to ``sink`` on this loop; runs until cancelled.

        A notification naming event files re-reads only those; anything else (a new directory, a
        lost notification, the poll) rescans the whole logdir. ``max_busy_gap_s`` is asked after
        every read: the longest gap the sink allows between reads of a busy run, used when above
        ``MAX_BUSY_GAP_S`` (the cap on the gap a run's write rate earns, see ``busy_gap_for``).
        """
        wake = asyncio.Event()
        changed: set[str] = set()
        full = True

        def on_change(paths: set[str] | None) -> None:
            nonlocal full
            if paths is None:
                full = True
            else:
                changed.update(paths)
            wake.set()

        notifier: asyncio.Task[None] | None = None
        if self.change_detection != "poll" and isinstance(self._fs, LocalFileSystem):
            notifier = asyncio.create_task(self._notify(on_change), name=f"lightning-stream notify {self.logdir}")
        fast = min(REMOTE_FAST_POLL_S if self.remote else FAST_POLL_S, self.poll_interval_s)
        interval = fast
        loop = asyncio.get_running_loop()
        last_data = -1.0
        busy_gap = BUSY_GAP_S
        busy: set[str] = set()  # the files the last read that found data was told of
        try:
            while True:
                # Busy run: coalesce. The first change after a quiet spell is read at once; further
                # ones wait until busy_gap after the last read that found data, so a run logging
                # 1,000 steps/s costs at most 1/BUSY_GAP_S reads per second, not 1,000.
                gap = last_data + busy_gap - loop.time()
                if gap > 0:
                    self._pause_notify(busy)  # no wake-up (nor event) per write while we wait anyway
                    try:
                        await asyncio.sleep(gap)
                    finally:
                        self._resume_notify()  # hands over what was written meanwhile
                wake.clear()
                only = None if full else set(changed)
                full = False
                changed.clear()
                if only is not None and len(only) <= INLINE_READ_FILES and not self.remote:
                    # A notification named a few local files: an appended record or two is µs of
                    # work, cheaper inline than two GIL hand-offs to a worker thread and back.
                    batches = self.scan(INLINE_READ_POINTS, only=only)  # more: next pass, in a thread
                else:
                    reading = asyncio.ensure_future(asyncio.to_thread(self.scan, SCAN_SLICE_POINTS, only=only))
                    try:
                        batches = await asyncio.shield(reading)
                    except asyncio.CancelledError:
                        # Cancelled mid-read (unwatch, stop): the worker thread has already moved the
                        # readers' offsets past what it read, so hand that over when it lands, not drop it.
                        reading.add_done_callback(lambda done: _deliver(done, sink))
                        raise
                if self.has_more:
                    full = True  # the rest of a large backlog: next slice right away
                if batches:
                    busy = only or set()
                    sink(batches)
                    now = loop.time()
                    busy_gap = busy_gap_for(max(len(b) for b in batches), now - last_data, max_busy_gap_s())
                    last_data = now
                    interval = fast
                    if full:
                        continue
                    if self.notifications_active and not self._notify_degraded():
                        # Busy: sleep out the gap with notifications paused (top of the loop) instead
                        # of waking for the next write first (a wake-up costs ~0.15 ms of CPU on a small VM).
                        continue
                else:
                    interval = min(interval * 2, self.poll_interval_s)
                if self.notifications_active and not self._notify_degraded():
                    if self.change_detection in ("inotify", "watchfiles"):
                        await wake.wait()  # notifications only
                        continue
                    interval = self.poll_interval_s  # notifications are fast: the poll is only a safety net
                if not await _wait(wake, interval):
                    full = True  # a poll: look at everything
        finally:
            if notifier is not None:
                notifier.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await notifier
            self.notifications_active = False

    async def _notify(self, on_change: Callable[[set[str] | None], None]) -> None:
        """Call ``on_change`` with the event files that changed (``None``: rescan everything)."""
        from lightning_stream import _inotify  # here: ctypes is not needed for a scan (``firstread.py``)

        use_inotify = self.change_detection in ("auto", "inotify") and _inotify.available()
        if self.change_detection == "inotify" and not use_inotify:
            log.warning("%s: inotify is not available here; polling instead", self.logdir)
            return
        while True:
            if not await asyncio.to_thread(os.path.isdir, self.logdir):
                await asyncio.sleep(self.poll_interval_s)
                continue
            try:
                if use_inotify:
                    await self._notify_inotify(on_change)
                else:
                    await self._notify_watchfiles(on_change)
            except (OSError, RuntimeError) as exc:
                # e.g. the inotify watch limit (fs.inotify.max_user_watches) is reached: keep polling.
                self.notifications_active = False
                log.warning(
                    "%s: file notifications unavailable (%s); polling every %.3g s at most instead",
                    self.logdir,
                    exc,
                    self.poll_interval_s,
                )
                on_change(None)
                return
            self.notifications_active = False
            on_change(None)
            await asyncio.sleep(self.poll_interval_s)  # the logdir went away: wait for it to come back

    async def _notify_inotify(self, on_change: Callable[[set[str] | None], None]) -> None:
        from lightning_stream import _inotify

        gone = asyncio.Event()
        tree = _inotify.TreeWatch(self.logdir, on_change, marker=EVENT_FILE_MARKER, on_root_gone=gone.set)
        opening = asyncio.ensure_future(asyncio.to_thread(tree.open))
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(lambda _: tree.close())  # close the descriptor once open() is done
            raise
        try:
            tree.attach(asyncio.get_running_loop())
            self.notifications_active = True
            self._notify_degraded = lambda: tree.degraded
            self._pause_notify, self._resume_notify = tree.pause, tree.resume
            on_change(None)  # anything that happened before the watches existed
            await gone.wait()
        finally:
            tree.close()
            self._notify_degraded = _never
            self._pause_notify = self._resume_notify = _nothing

    async def _notify_watchfiles(self, on_change: Callable[[set[str] | None], None]) -> None:
        import watchfiles

        def relevant(change: watchfiles.Change, path: str) -> bool:
            return change == watchfiles.Change.added or EVENT_FILE_MARKER in os.path.basename(path)

        changes = watchfiles.awatch(
            self.logdir,
            watch_filter=relevant,
            debounce=NOTIFY_MAX_DEBOUNCE_MS,
            step=NOTIFY_STEP_MS,
            ignore_permission_denied=True,
        )
        self.notifications_active = True
        on_change(None)
        async for batch in changes:
            paths = {path for change, path in batch if change == watchfiles.Change.modified}
            structural = any(change != watchfiles.Change.modified for change, _ in batch)
            on_change(None if structural or not paths else paths)


def busy_gap_for(steps: int, elapsed_s: float, sink_gap_s: float = 0.0) -> float:
    """Gap before the next read, after one that found ``steps`` points of its busiest series
    written over ``elapsed_s`` (since the read before).

    ``BUSY_GAP_S`` up to ``BUSY_STEPS_PER_S``, then growing with the rate, but up to
    ``LIVE_STEPS_PER_S`` at most ``LIVE_GAP_S`` (or ``sink_gap_s``, the gap the sink asks for, if
    longer: the hub's fan-out budget wins with many clients), then growing again, by
    ``FAST_GAP_PER_STEP_S`` per step/s; never more than ``MAX_BUSY_GAP_S`` or ``sink_gap_s``,
    whichever is longer.
    """
    rate = steps / elapsed_s if elapsed_s > 0 else 0.0
    slope = BUSY_GAP_S / BUSY_STEPS_PER_S
    gap = min(slope * rate, max(LIVE_GAP_S, sink_gap_s))
    if rate > LIVE_STEPS_PER_S:  # continuous at the bound, and never shorter than the sink's gap there
        gap = max(gap, LIVE_GAP_S + FAST_GAP_PER_STEP_S * (rate - LIVE_STEPS_PER_S))
    return min(max(MAX_BUSY_GAP_S, sink_gap_s), max(BUSY_GAP_S, gap))


def _never() -> bool:
    return False


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` s; whether it is set.

    Not ``asyncio.wait_for``: before Python 3.12 it can swallow a cancellation that arrives in the
    same loop pass as the event (cpython gh-86296), and ``watch`` then never stops: the stop hangs.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter,), timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()


def _deliver(done: asyncio.Future[list[ScalarBatch]], sink: Callable[[list[ScalarBatch]], None]) -> None:
    """Pass a finished read to ``sink`` (used when the watch was cancelled while it ran)."""
    if not done.cancelled() and done.exception() is None and done.result():
        sink(done.result())


def _nothing(*_: object) -> None:
    """Placeholder for notification hooks while no notifier is attached."""

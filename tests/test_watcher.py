"""LogdirWatcher: runs as TensorBoard defines them, every file read, changes picked up while watching."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from eventfiles import WALL_TIME, event_files, read_all, records, simple_event, write_tensorboard

from lightning_stream import _inotify
from lightning_stream.filesystem import FileStat, LocalFileSystem
from lightning_stream.scalars import ScalarBatch
from lightning_stream.watcher import (
    BUSY_GAP_S,
    BUSY_STEPS_PER_S,
    FAST_GAP_PER_STEP_S,
    LIVE_GAP_S,
    LIVE_STEPS_PER_S,
    MAX_BUSY_GAP_S,
    ChangeDetection,
    LogdirWatcher,
    busy_gap_for,
)

GUARD_S = 30.0
"""Deadlock guard for waits (not a timing assertion: the machine is shared and may be slow)."""


def point(tag: str, step: int, value: float) -> tuple[str, int, float, float]:
    return (tag, step, WALL_TIME, value)


def test_runs_are_directories_holding_event_files_named_by_relative_path(tmp_path: Path) -> None:
    write_tensorboard(tmp_path, [point("a", 0, 1.0)])
    write_tensorboard(tmp_path / "a", [point("a", 0, 1.0)])
    write_tensorboard(tmp_path / "a" / "b", [point("a", 0, 1.0)])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("not a run")
    watcher = LogdirWatcher(tmp_path)
    batches = watcher.scan()
    assert watcher.runs() == {".": str(tmp_path), "a": str(tmp_path / "a"), "a/b": str(tmp_path / "a" / "b")}
    assert sorted(b.run for b in batches) == [".", "a", "a/b"]


def test_prefix_names_the_root_run_and_prefixes_nested_ones(tmp_path: Path) -> None:
    write_tensorboard(tmp_path, [point("a", 0, 1.0)])
    write_tensorboard(tmp_path / "x" / "y", [point("a", 0, 1.0)])
    watcher = LogdirWatcher(tmp_path, prefix="exp1")
    assert sorted(b.run for b in watcher.scan()) == ["exp1", "exp1/x/y"]
    assert set(watcher.runs()) == {"exp1", "exp1/x/y"}


@pytest.mark.torch
def test_every_event_file_of_a_run_is_read_not_only_the_newest(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    older = SummaryWriter(str(tmp_path))
    older.add_scalar("a", 0.0, 0, walltime=WALL_TIME)
    older.flush()
    watcher = LogdirWatcher(tmp_path)
    assert [p[1] for p in read_all(watcher.scan())] == [0]
    newer = SummaryWriter(str(tmp_path))
    newer.add_scalar("b", 1.0, 100, walltime=WALL_TIME)
    newer.flush()
    older.add_scalar("a", 2.0, 1, walltime=WALL_TIME)  # the older file keeps growing
    older.flush()
    older.close()
    newer.close()
    assert len(event_files(tmp_path)) == 2
    assert sorted(read_all(watcher.scan())) == [point("a", 1, 2.0), point("b", 100, 1.0)]
    assert watcher.stats["files"] == 2
    assert watcher.stats["scalars"] == 3


def test_scan_returns_only_what_is_new(tmp_path: Path) -> None:
    path = tmp_path / "run" / "events.out.tfevents.1.host"
    path.parent.mkdir()
    path.write_bytes(records(simple_event("a", i, WALL_TIME, 1.0) for i in range(3)))
    watcher = LogdirWatcher(tmp_path)
    assert len(read_all(watcher.scan())) == 3
    assert watcher.scan() == []
    with path.open("ab") as f:
        f.write(records([simple_event("a", 3, WALL_TIME, 1.0)]))
    assert read_all(watcher.scan()) == [point("a", 3, 1.0)]


def test_scan_with_max_points_hands_a_backlog_over_in_slices_without_loss(tmp_path: Path) -> None:
    for r in range(3):
        path = tmp_path / f"run{r}" / "events.out.tfevents.1.host"
        path.parent.mkdir()
        path.write_bytes(records(simple_event("a", i, WALL_TIME, float(r)) for i in range(50)))
    watcher = LogdirWatcher(tmp_path)
    points: list[tuple[str, int]] = []
    scans = 0
    while True:
        scans += 1
        points += [(b.run, s) for b in watcher.scan(max_points=40) for s in b.steps]
        if not watcher.has_more:
            break
    assert scans > 1
    assert sorted(points) == sorted((f"run{r}", i) for r in range(3) for i in range(50))
    assert watcher.scan() == []


def test_removed_file_keeps_its_counts_in_stats(tmp_path: Path) -> None:
    path = write_tensorboard(tmp_path / "run", [point("a", i, 1.0) for i in range(4)])
    watcher = LogdirWatcher(tmp_path)
    watcher.scan()
    path.unlink()
    assert watcher.scan() == []
    assert (watcher.stats["scalars"], watcher.stats["files"]) == (4, 0)


def test_bad_arguments_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval_s must be positive, got 0"):
        LogdirWatcher(tmp_path, poll_interval_s=0)
    with pytest.raises(ValueError, match="change_detection must be"):
        LogdirWatcher(tmp_path, change_detection="fsevents")  # type: ignore[arg-type]


# ---------------------------------------------------------------- watching


class Collector:
    def __init__(self) -> None:
        self.batches: list[ScalarBatch] = []

    def __call__(self, batches: list[ScalarBatch]) -> None:
        self.batches.extend(batches)

    def points(self) -> list[tuple[str, str, int, float]]:
        return [(b.run, t, s, v) for b in self.batches for (t, s, _, v) in read_all([b])]

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + GUARD_S
        while not predicate():
            assert time.monotonic() < deadline, f"gave up waiting for {what}; got {self.points()!r}"
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def watching(watcher: LogdirWatcher) -> AsyncIterator[Collector]:
    collector = Collector()
    task = asyncio.create_task(watcher.watch(collector))
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["auto", "inotify", "watchfiles", "poll"])
async def test_watch_picks_up_new_runs_new_files_and_appends(tmp_path: Path, mode: ChangeDetection) -> None:
    from torch.utils.tensorboard import SummaryWriter

    watcher = LogdirWatcher(tmp_path, poll_interval_s=0.2, change_detection=mode)
    async with watching(watcher) as got:
        first = SummaryWriter(str(tmp_path / "run1"))
        first.add_scalar("loss", 1.0, 0, walltime=WALL_TIME)
        first.flush()
        await got.wait_for(lambda: ("run1", "loss", 0, 1.0) in got.points(), "the first point of run1")

        first.add_scalar("loss", 0.5, 1, walltime=WALL_TIME)
        first.flush()
        await got.wait_for(lambda: ("run1", "loss", 1, 0.5) in got.points(), "an appended point")

        second = SummaryWriter(str(tmp_path / "nested" / "run2"))
        second.add_scalar("acc", 0.25, 7, walltime=WALL_TIME)
        second.flush()
        await got.wait_for(lambda: ("nested/run2", "acc", 7, 0.25) in got.points(), "a new run")

        resumed = SummaryWriter(str(tmp_path / "run1"))  # a restarted job: a new file in the same run
        resumed.add_scalar("loss", 0.25, 2, walltime=WALL_TIME)
        resumed.flush()
        await got.wait_for(lambda: ("run1", "loss", 2, 0.25) in got.points(), "a new file in run1")
        for writer in (first, second, resumed):
            writer.close()
    assert sorted(watcher.runs()) == ["nested/run2", "run1"]
    assert sorted(got.points()) == sorted(
        [("run1", "loss", 0, 1.0), ("run1", "loss", 1, 0.5), ("nested/run2", "acc", 7, 0.25), ("run1", "loss", 2, 0.25)]
    )


async def test_watch_starts_a_truncated_file_over(tmp_path: Path) -> None:
    path = tmp_path / "run" / "events.out.tfevents.1.host"
    path.parent.mkdir()
    path.write_bytes(records(simple_event("a", i, WALL_TIME, 1.0) for i in range(5)))
    watcher = LogdirWatcher(tmp_path, poll_interval_s=0.2)
    async with watching(watcher) as got:
        await got.wait_for(lambda: len(got.points()) == 5, "the first five points")
        path.write_bytes(records([simple_event("a", 0, WALL_TIME, 2.0)]))
        await got.wait_for(lambda: len(got.points()) == 6, "the rewritten file's point")
    assert got.points()[-1] == ("run", "a", 0, 2.0)
    assert watcher.stats["restarts"] == 1


async def test_watch_waits_for_a_logdir_that_does_not_exist_yet(tmp_path: Path) -> None:
    logdir = tmp_path / "later"
    watcher = LogdirWatcher(logdir, poll_interval_s=0.1)
    async with watching(watcher) as got:
        await asyncio.sleep(0.05)
        write_tensorboard(logdir / "run", [point("x", 1, 3.0)])
        await got.wait_for(lambda: got.points() == [("run", "x", 1, 3.0)], "the point of the new logdir")


class ForwardingFileSystem:
    """A FileSystem that is not ``LocalFileSystem`` (as a remote one would be): no notifications."""

    def __init__(self) -> None:
        self._local = LocalFileSystem()
        self.calls = 0

    def exists(self, path: str) -> bool:
        return self._local.exists(path)

    def list_event_files(self, root: str) -> list[str]:
        self.calls += 1
        return self._local.list_event_files(root)

    def stat(self, path: str) -> FileStat | None:
        return self._local.stat(path)

    def read(self, path: str, offset: int, size: int) -> bytes:
        return self._local.read(path, offset, size)


async def test_filesystem_without_notifications_is_polled(tmp_path: Path) -> None:
    fs = ForwardingFileSystem()
    watcher = LogdirWatcher(tmp_path, fs=fs, poll_interval_s=0.05)
    async with watching(watcher) as got:
        await got.wait_for(lambda: fs.calls >= 1, "a first scan")
        write_tensorboard(tmp_path / "run", [point("x", 1, 3.0)])  # created after that scan: only a poll finds it
        await got.wait_for(lambda: got.points() == [("run", "x", 1, 3.0)], "a polled point")
        assert watcher.notifications_active is False


async def test_notifications_are_used_on_a_local_logdir(tmp_path: Path) -> None:
    watcher = LogdirWatcher(tmp_path, poll_interval_s=60.0, change_detection="watchfiles")
    async with watching(watcher) as got:
        await got.wait_for(lambda: watcher.notifications_active, "notifications to start")
        await asyncio.sleep(0.2)  # let the OS watch settle before the write
        write_tensorboard(tmp_path / "run", [point("x", 1, 3.0)])
        # With a 60 s poll, only a notification can deliver this point within the guard.
        await got.wait_for(lambda: got.points() == [("run", "x", 1, 3.0)], "a notified point")


def test_symlinked_run_directories_are_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    write_tensorboard(target, [point("x", 1, 3.0)])
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    os.symlink(target, logdir / "linked")
    assert [b.run for b in LogdirWatcher(logdir).scan()] == ["linked"]


# ---------------------------------------------------------------- inotify


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_inotify_wakes_for_event_files_and_new_directories_not_for_other_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    calls: list[set[str] | None] = []
    woke = asyncio.Event()

    def on_change(paths: set[str] | None) -> None:
        calls.append(paths)
        woke.set()

    tree = _inotify.TreeWatch(str(tmp_path), on_change)
    tree.open()
    tree.attach(asyncio.get_running_loop())
    try:
        (tmp_path / "run" / "model.ckpt").write_bytes(b"x" * 1000)  # checkpoints do not wake the watcher
        await asyncio.sleep(0.2)
        assert calls == []
        event_file = tmp_path / "run" / "events.out.tfevents.1.host"
        event_file.write_bytes(b"")
        await asyncio.wait_for(woke.wait(), GUARD_S)
        woke.clear()
        calls.clear()
        with event_file.open("ab") as f:
            f.write(b"data")
        await asyncio.wait_for(woke.wait(), GUARD_S)
        woke.clear()
        assert calls == [{str(event_file)}]  # an append names the file: no full rescan needed
        (tmp_path / "run" / "new_dir").mkdir()
        await asyncio.wait_for(woke.wait(), GUARD_S)
        woke.clear()
        # The new directory got its own watch: a file created in it wakes us too.
        (tmp_path / "run" / "new_dir" / "events.out.tfevents.2.host").write_bytes(b"")
        await asyncio.wait_for(woke.wait(), GUARD_S)
        assert tree.alive
    finally:
        tree.close()


def queued_event_bytes(tree: _inotify.TreeWatch) -> int:
    """Bytes of events waiting in the kernel for this watch's descriptor (FIONREAD)."""
    import array
    import fcntl
    import termios

    buffer = array.array("i", [0])
    fcntl.ioctl(tree._fd, termios.FIONREAD, buffer)
    return buffer[0]


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_a_paused_busy_directory_costs_its_writer_no_events_and_loses_no_change(tmp_path: Path) -> None:
    busy_dir, other_dir = tmp_path / "busy", tmp_path / "other"
    busy_dir.mkdir()
    other_dir.mkdir()
    busy, beside, other = (
        busy_dir / "events.out.tfevents.1.host",
        busy_dir / "events.out.tfevents.2.host",
        other_dir / "events.out.tfevents.3.host",
    )
    for path in (busy, beside, other):
        path.write_bytes(b"")
    calls: list[set[str] | None] = []
    tree = _inotify.TreeWatch(str(tmp_path), calls.append)
    tree.open()
    tree.attach(asyncio.get_running_loop())
    try:
        tree.pause({str(busy)})
        for _ in range(50):  # as TensorBoard's writer does per record: open, append, close
            with busy.open("ab") as f:
                f.write(b"record")
        with beside.open("ab") as f:  # once, in the same directory: no event either, found on resume
            f.write(b"record")
        assert queued_event_bytes(tree) == 0  # the kernel made no event in those writes
        with other.open("ab") as f:  # another directory keeps its events
            f.write(b"record")
        assert queued_event_bytes(tree) > 0
        tree.resume()
        assert calls == [{str(busy), str(beside), str(other)}]
        calls.clear()
        with busy.open("ab") as f:  # resumed: writes are events again
            f.write(b"record")
        assert queued_event_bytes(tree) > 0
    finally:
        tree.close()


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_watch_survives_the_logdir_being_deleted_and_recreated(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    write_tensorboard(logdir / "run", [point("x", 1, 1.0)])
    watcher = LogdirWatcher(logdir, poll_interval_s=0.1, change_detection="inotify")
    async with watching(watcher) as got:
        await got.wait_for(lambda: len(got.points()) == 1, "the first point")
        shutil.rmtree(logdir)
        await got.wait_for(lambda: not watcher.notifications_active, "the watch to notice the removal")
        write_tensorboard(logdir / "run", [point("x", 2, 2.0)])
        await got.wait_for(lambda: ("run", "x", 2, 2.0) in got.points(), "a point in the recreated logdir")
        await got.wait_for(lambda: watcher.notifications_active, "notifications to resume")


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
def test_bench_watch_idle_quick_runs() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_watch_idle.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--only", "inotify"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("inotify")]
    assert row.split()[-1] == "yes"  # notifications were active


def test_symlink_cycle_does_not_make_a_scan_endless(tmp_path: Path) -> None:
    write_tensorboard(tmp_path / "run", [point("x", 1, 3.0)])
    os.symlink(tmp_path, tmp_path / "run" / "loop")  # run/loop -> logdir
    watcher = LogdirWatcher(tmp_path)
    assert [b.run for b in watcher.scan()] == ["run"]


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_cancelled_watches_leave_no_descriptor_open(tmp_path: Path) -> None:
    write_tensorboard(tmp_path / "run", [point("x", 1, 3.0)])
    for i in range(400):  # a tree that takes a while to watch, so some cancels land inside open()
        (tmp_path / "many" / f"d{i}").mkdir(parents=True)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    baseline = open_fds()
    for delay in (0.0, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, None):
        watcher = LogdirWatcher(tmp_path, change_detection="inotify")
        async with watching(watcher) as got:
            if delay is None:
                await got.wait_for(lambda w=watcher: w.notifications_active, "notifications to start")
            else:
                await asyncio.sleep(delay)
    await Collector().wait_for(lambda: open_fds() <= baseline, "every inotify descriptor to be closed")


class CountingFileSystem(LocalFileSystem):
    """The local disk, counting full listings of the logdir."""

    def __init__(self) -> None:
        self.listings = 0

    def list_event_files(self, root: str) -> list[str]:
        self.listings += 1
        return super().list_event_files(root)


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_appends_reread_only_the_notified_file_without_listing_the_logdir(tmp_path: Path) -> None:
    for r in range(5):
        write_tensorboard(tmp_path / f"idle{r}", [point("x", 1, 1.0)])
    path = tmp_path / "active" / "events.out.tfevents.1.host"
    path.parent.mkdir()
    path.write_bytes(records([simple_event("a", 0, WALL_TIME, 0.0)]))
    fs = CountingFileSystem()
    watcher = LogdirWatcher(tmp_path, fs=fs, poll_interval_s=60.0, change_detection="inotify")
    async with watching(watcher) as got:
        await got.wait_for(lambda: watcher.notifications_active and len(got.points()) == 6, "the initial points")
        await asyncio.sleep(0.1)
        listings = fs.listings
        for step in range(1, 6):
            with path.open("ab") as f:
                f.write(records([simple_event("a", step, WALL_TIME, float(step))]))
            await got.wait_for(lambda s=step: ("active", "a", s, float(s)) in got.points(), f"step {step}")
        assert fs.listings == listings


def test_busy_gap_grows_with_the_write_rate_within_bounds() -> None:
    assert busy_gap_for(1, 0.022) == BUSY_GAP_S  # a step every 22 ms: each read at once
    assert busy_gap_for(int(BUSY_STEPS_PER_S), 1.0) == BUSY_GAP_S
    assert busy_gap_for(6, 0.1) == pytest.approx(1.2 * BUSY_GAP_S)  # 60 steps/s: bigger batches (up to 25 ms)
    assert busy_gap_for(1000, 0.02) == MAX_BUSY_GAP_S  # never longer than this
    assert busy_gap_for(5, 0.0) == BUSY_GAP_S
    assert busy_gap_for(5, 3600.0) == BUSY_GAP_S  # the first read after a quiet spell
    assert busy_gap_for(15, 0.1, 0.16) == pytest.approx(0.06)  # the sink may allow longer (10 clients, 150 steps/s)
    assert busy_gap_for(1000, 0.02, 0.8) == 0.8  # ...even beyond the watcher's own cap
    assert busy_gap_for(6, 0.1, 0.2) == pytest.approx(1.2 * BUSY_GAP_S)  # ...which changes nothing for a slower run


@pytest.mark.parametrize("steps_per_s", [75, 100, 150, 200])
def test_a_run_up_to_200_steps_per_second_is_read_often_enough_for_a_20_ms_median(steps_per_s: int) -> None:
    # A point waits for its read half the gap on average: p50 <= 20 ms needs reads <= ~35 ms apart
    # (the gap used to grow to 80 ms at 200 steps/s), even when the sink allows longer (2 clients: 32 ms).
    assert busy_gap_for(steps_per_s // 10, 0.1) == LIVE_GAP_S <= 0.03
    assert busy_gap_for(steps_per_s // 10, 0.1, 1 / 62.5) == LIVE_GAP_S  # one client
    assert busy_gap_for(steps_per_s // 10, 0.1, 2 / 62.5) <= 0.032  # two: the hub's fan-out budget
    assert 1 / LIVE_GAP_S <= 1 / BUSY_GAP_S  # never more reads than a 50 steps/s run costs


def test_a_run_beyond_200_steps_per_second_is_read_in_bigger_batches_again() -> None:
    assert busy_gap_for(30, 0.1) == pytest.approx(0.125)  # 300 steps/s: 8 reads a second
    assert busy_gap_for(50, 0.1) == pytest.approx(0.325)  # 500 steps/s
    assert busy_gap_for(90, 0.1) == MAX_BUSY_GAP_S == 0.5  # 900 steps/s, bench_overhead's loop: twice a second
    for sink in (1 / 62.5, 0.16, 0.25):  # the hub's fan-out gap (1, 10, 16+ clients) changes none of these
        assert busy_gap_for(30, 0.1, sink) == pytest.approx(0.125)
        assert busy_gap_for(90, 0.1, sink) == MAX_BUSY_GAP_S
    assert busy_gap_for(15, 0.1, 0.16) == pytest.approx(0.06)  # 150 steps/s, 10 clients: as before
    assert LIVE_GAP_S + FAST_GAP_PER_STEP_S * (1000 - LIVE_STEPS_PER_S) > MAX_BUSY_GAP_S  # the cap is reached
    rates = [r / 10 for r in range(1900, 2100)]  # no jump at the bound, whatever the sink asks for
    for sink in (0.0, 2 / 62.5, 0.16):
        gaps = [busy_gap_for(int(r * 10), 10.0, sink) for r in rates]
        assert max(abs(b - a) for a, b in itertools.pairwise(gaps)) < 0.001, sink


async def _watch_a_fast_writer(
    directory: Path, write: Callable[[Path], int], **watch_options: Any
) -> tuple[list[int], list[tuple[str, str, int, float]], int, float]:
    """Watch ``directory`` while ``write(path)`` appends records to an event file there (in a thread);
    returns the points of each read, every point, the number written and the seconds it all took."""
    path = directory / "events.out.tfevents.1.host"
    path.write_bytes(b"")
    watcher = LogdirWatcher(directory, poll_interval_s=60.0, change_detection="inotify")
    reads: list[int] = []
    got = Collector()

    def sink(batches: list[ScalarBatch]) -> None:
        reads.append(sum(len(b) for b in batches))
        got(batches)

    task = asyncio.create_task(watcher.watch(sink, **watch_options))
    try:
        await got.wait_for(lambda: watcher.notifications_active, "notifications")
        started = time.monotonic()
        written = await asyncio.to_thread(write, path)
        await got.wait_for(lambda: len(got.points()) == written, f"all {written} points")
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return reads, got.points(), written, elapsed


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_a_fast_writer_is_read_in_few_big_batches_and_nothing_is_lost(tmp_path: Path) -> None:
    def write(path: Path) -> int:  # ~1,000 flushed writes a second, like a fast Lightning loop
        with path.open("ab") as f:
            for step in range(600):
                f.write(records([simple_event("a", step, WALL_TIME, float(step))]))
                f.flush()
                time.sleep(0.001)
        return 600

    reads, points, written, elapsed = await _watch_a_fast_writer(tmp_path, write)
    assert [p[2] for p in points] == list(range(written))  # each once, in order
    # The gap grows to MAX_BUSY_GAP_S while the writer keeps up its pace (a fixed BUSY_GAP_S
    # would need 4 times as many reads); slack for a writer that stalls now and then.
    assert len(reads) <= 1.5 * elapsed / MAX_BUSY_GAP_S + 5, (len(reads), elapsed, reads)


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_a_sink_asking_for_a_longer_gap_gets_bigger_batches_and_nothing_is_lost(tmp_path: Path) -> None:
    # Two watchers of the same writes, one whose sink asks for 160 ms (the hub's gap with 10 clients):
    # at ~100-200 steps/s it reads 2-3 times less often (slope x rate instead of LIVE_GAP_S).
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"")
    reads: dict[str, list[int]] = {"own": [], "sink": []}
    got = {name: Collector() for name in reads}
    watchers = {name: LogdirWatcher(tmp_path, poll_interval_s=60.0, change_detection="inotify") for name in reads}

    def sink_of(name: str) -> Callable[[list[ScalarBatch]], None]:
        def sink(batches: list[ScalarBatch]) -> None:
            reads[name].append(sum(len(b) for b in batches))
            got[name](batches)

        return sink

    def write() -> int:  # ~180 steps/s for ~1.5 s, each record flushed
        with path.open("ab") as f:
            for step in range(270):
                f.write(records([simple_event("a", step, WALL_TIME, float(step))]))
                f.flush()
                time.sleep(1 / 180)
        return 270

    tasks = [
        asyncio.create_task(watchers["own"].watch(sink_of("own"))),
        asyncio.create_task(watchers["sink"].watch(sink_of("sink"), max_busy_gap_s=lambda: 0.16)),
    ]
    try:
        for name in reads:
            await got[name].wait_for(lambda n=name: watchers[n].notifications_active, "notifications")
        written = await asyncio.to_thread(write)
        for name in reads:
            await got[name].wait_for(lambda n=name: len(got[n].points()) == written, f"all points ({name})")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for name in reads:
        assert [p[2] for p in got[name].points()] == list(range(written))  # each once, in order
    assert len(reads["sink"]) <= 0.75 * len(reads["own"]), reads


def inotify_watch_masks() -> list[int]:
    """The masks of every inotify watch this process holds (``/proc/self/fdinfo``)."""
    masks = []
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("inotify wd:"):
                    fields = dict(field.split(":", 1) for field in line.split()[1:])
                    masks.append(int(fields["mask"], 16))
    return masks


@pytest.mark.skipif(not _inotify.available(), reason="inotify is Linux-only")
async def test_a_busy_run_is_not_notified_of_each_write_while_the_watcher_sleeps_out_its_gap(tmp_path: Path) -> None:
    quiet_seen: list[bool] = []

    def write(path: Path) -> int:
        # as TensorBoard's writer does per record (open, append, close), until the watch of the run's
        # directory was seen without per-write events (IN_MODIFY), at most GUARD_S
        until = time.monotonic() + GUARD_S
        step = 0
        while time.monotonic() < until:
            with path.open("ab") as f:
                f.write(records([simple_event("a", step, WALL_TIME, float(step))]))
            step += 1
            if step >= 200 and step % 20 == 0 and any(not m & _inotify.IN_MODIFY for m in inotify_watch_masks()):
                quiet_seen.append(True)
                break
            time.sleep(0.0005)
        return step

    _, points, written, _ = await _watch_a_fast_writer(tmp_path, write)
    assert quiet_seen == [True]
    assert [p[2] for p in points] == list(range(written))  # each once, in order


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="root reads everything; needs setuid to 'nobody'")
def test_unreadable_runs_and_files_are_warned_about_once_not_skipped_silently() -> None:
    """As another user: a run directory and an event file this user may not read each give one warning."""
    import logging

    from tests.otheruser import as_other_user, shared_tmp

    with shared_tmp() as shared:
        root = shared / "logs"
        for run in ("readable", "private_run", "private_file"):
            write_tensorboard(root / run, [point("loss", 1, 0.5)])
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(root / "private_run", 0o700)
        (private_file,) = event_files(root / "private_file")
        os.chmod(private_file, 0o600)

        def scan_twice() -> None:
            seen: list[logging.LogRecord] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = seen.append  # type: ignore[method-assign]
            logging.getLogger("lightning_stream").addHandler(handler)
            watcher = LogdirWatcher(str(root))
            assert {b.run for b in watcher.scan()} == {"readable"}
            watcher.scan()
            messages = [r.getMessage() for r in seen]
            assert len(messages) == 2, messages
            assert any(str(root / "private_run") in m for m in messages), messages
            assert any(str(private_file) in m for m in messages), messages

        as_other_user(scan_twice)

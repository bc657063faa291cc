"""What does watching cost while nothing happens, and how soon is a new point seen?

Watches a logdir of 100 idle runs (generated once in benchmarks/data/) with ``LogdirWatcher.watch``
in each change-detection mode, each in a fresh subprocess, and reports:

* idle CPU: process CPU time (all threads) over a quiet window, as % of one core;
* pickup latency: time from appending one record to a run's event file (``write`` + ``flush``) to
  the watcher handing the point to its sink, after the watcher has been idle for a while (so the
  adaptive poll has backed off to ``poll_interval_s``: the worst case).

Modes (``LogdirWatcher(change_detection=...)``): ``auto`` (the default: inotify on the loop + a
1 s safety poll), ``inotify`` (notifications only), ``watchfiles`` (watchfiles with our 5 ms step,
notifications only), ``watchfiles step=50ms`` (watchfiles' own default step), ``poll`` (the adaptive
stat poll alone: what remains when notifications are unavailable).

    .venv/bin/python benchmarks/bench_watch_idle.py            # 20 s idle window per mode
    .venv/bin/python benchmarks/bench_watch_idle.py --quick    # 2 s window, 3 latency samples
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOGDIR = HERE / "data" / "idle_100_runs"
RUNS = 100
MODES = ["auto", "inotify", "watchfiles", "watchfiles step=50ms", "poll"]


def generate() -> None:
    marker = LOGDIR / "COMPLETE"
    if marker.exists():
        return
    from torch.utils.tensorboard import SummaryWriter

    for r in range(RUNS):
        writer = SummaryWriter(str(LOGDIR / f"run_{r:03d}"))
        for step in range(10):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.close()
    marker.write_text("ok")


def record(step: int) -> bytes:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from lightning_stream.tfrecord import frame

    value = summary_pb2.Summary.Value(tag="latency", simple_value=float(step))
    event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value]))
    return frame(event.SerializeToString())


async def child(mode: str, window_s: float, samples: int, idle_s: float) -> dict[str, Any]:
    from lightning_stream import watcher as watcher_module
    from lightning_stream.scalars import ScalarBatch
    from lightning_stream.watcher import LogdirWatcher

    detection = mode.split()[0]
    if "step=" in mode:
        watcher_module.NOTIFY_STEP_MS = int(mode.split("step=")[1].removesuffix("ms"))
    seen: dict[int, float] = {}
    arrived = asyncio.Event()
    new_point = asyncio.Event()

    def sink(batches: list[ScalarBatch]) -> None:
        now = time.perf_counter()
        for batch in batches:
            if batch.tag == "latency":
                for step in batch.steps:
                    seen.setdefault(step, now)
                new_point.set()
        arrived.set()

    watcher = LogdirWatcher(LOGDIR, poll_interval_s=1.0, change_detection=detection)  # type: ignore[arg-type]
    task = asyncio.create_task(watcher.watch(sink))
    await asyncio.wait_for(arrived.wait(), 60)  # the initial read of every run
    await asyncio.sleep(3.0)  # let the adaptive poll back off and notifications settle
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window_s)
    cpu_pct = 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    target = LOGDIR / "run_000" / "events.out.tfevents.0.latency"
    latencies = []
    try:
        with target.open("ab") as f:
            for i in range(samples):
                await asyncio.sleep(idle_s)  # idle first: the worst case for an adaptive poll
                step = 1_000_000 + i + int(time.time() * 1000) % 1_000_000 * 10
                data = record(step)
                written = time.perf_counter()
                f.write(data)
                f.flush()
                with contextlib.suppress(asyncio.TimeoutError):
                    while step not in seen:
                        await asyncio.wait_for(new_point.wait(), 10)
                        new_point.clear()
                latencies.append((seen[step] - written) * 1000 if step in seen else float("inf"))
    finally:
        notifications = watcher.notifications_active
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        target.unlink(missing_ok=True)
    return {
        "cpu_pct": cpu_pct,
        "latency_median_ms": statistics.median(latencies),
        "latency_max_ms": max(latencies),
        "notifications": notifications,
        "runs": len(watcher.runs()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 s idle window and 3 latency samples per mode")
    parser.add_argument("--only", action="append", choices=MODES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    window_s, samples, idle_s = (2.0, 3, 1.2) if args.quick else (20.0, 10, 1.5)
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, window_s, samples, idle_s))))
        return
    generate()
    print(f"watching {RUNS} idle runs in {LOGDIR}; idle window {window_s:g} s, {samples} latency samples")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    print(f"{'mode':<24}{'idle CPU % of a core':>22}{'latency median ms':>20}{'latency max ms':>16}{'notify':>8}")
    for mode in args.only or MODES:
        cmd = [sys.executable, __file__, "--child", mode] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            print(f"{mode:<24}  failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        assert r["runs"] == RUNS, r
        print(
            f"{mode:<24}{r['cpu_pct']:>22.2f}{r['latency_median_ms']:>20.1f}{r['latency_max_ms']:>16.1f}"
            f"{'yes' if r['notifications'] else 'no':>8}"
        )


if __name__ == "__main__":
    main()

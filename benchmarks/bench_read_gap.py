"""How long a busy run's points wait for the watcher's read: the read gap against the write rate.

One event file, one writer thread appending a flushed record at an exact rate (steps/s, one series),
``LogdirWatcher.watch`` with inotify in this process; its sink notes when each point arrives. The sink's
``max_busy_gap_s`` stands for the hub's fan-out budget: ``Hub.broadcast_gap_s`` = clients / 62.5 s
(1 client 16 ms, 2 clients 32 ms, 10 clients 160 ms). Reported per (rate, clients): reads a second, the
median gap between reads, and write → sink latency p50 / p99. No server, no clients, no Trainer: this is
the part of ``bench_latency.py``'s figure that the read gap decides, without the writer's flushing pattern
or the transport, so a change of the gap rule shows here even on a busy machine.

    .venv/bin/python benchmarks/bench_read_gap.py [--seconds S] [--rates 50,100,...] [--clients 1,2,10] [--quick]

Run it with ``PYTHONPATH=<another checkout>`` to measure that checkout's watcher.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.eventfiles; PYTHONPATH still wins

from lightning_stream import watcher
from tests.eventfiles import records, simple_event

SENDS_PER_S = 62.5  # hub.BROADCAST_SENDS_PER_S


def measure(rate: float, clients: int, seconds: float) -> tuple[float, float, float, float]:
    """(reads/s, median gap ms, latency p50 ms, p99 ms) of one run."""
    directory = Path(tempfile.mkdtemp(prefix="bench-read-gap-"))
    path = directory / "events.out.tfevents.1.host"
    path.write_bytes(b"")
    written: dict[int, float] = {}
    reads: list[float] = []
    latencies: list[float] = []

    def write() -> None:
        with path.open("ab") as f:
            started = time.monotonic()
            for step in range(int(rate * seconds)):
                due = started + step / rate
                while time.monotonic() < due:
                    time.sleep(0.0005)
                f.write(records([simple_event("a", step, 1.0, float(step))]))
                f.flush()
                written[step] = time.monotonic()

    async def run() -> None:
        watch = watcher.LogdirWatcher(directory, poll_interval_s=60.0, change_detection="inotify")

        def sink(batches: list) -> None:  # type: ignore[type-arg]
            now = time.monotonic()
            reads.append(now)
            latencies.extend(now - written.get(step, now) for b in batches for step in b.steps)

        task = asyncio.create_task(watch.watch(sink, max_busy_gap_s=lambda: clients / SENDS_PER_S))
        while not watch.notifications_active:  # noqa: ASYNC110 - a plain attribute, nothing to await
            await asyncio.sleep(0.01)
        await asyncio.to_thread(write)
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(reads) / seconds, 1000 * statistics.median(gaps), 1000 * p50, 1000 * p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of writing per configuration")
    parser.add_argument("--rates", default="50,100,150,200,400,800", help="steps/s of the one series")
    parser.add_argument("--clients", default="1,2,10", help="clients the sink's gap stands for")
    parser.add_argument("--quick", action="store_true", help="1 s, rates 100 and 200, 2 clients")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rates, args.clients = 1.0, "100,200", "2"
    print(f"watcher: {watcher.__file__}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    print(f"{'steps/s':>8}{'clients':>9}{'reads/s':>9}{'gap ms':>8}{'p50 ms':>8}{'p99 ms':>8}")
    for clients in (int(c) for c in args.clients.split(",")):
        for rate in (float(r) for r in args.rates.split(",")):
            reads, gap, p50, p99 = measure(rate, clients, args.seconds)
            print(f"{rate:>8.0f}{clients:>9}{reads:>9.1f}{gap:>8.1f}{p50:>8.1f}{p99:>8.1f}")


if __name__ == "__main__":
    main()

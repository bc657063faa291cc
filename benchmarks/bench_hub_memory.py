"""Hub memory and speed: bytes per point held, decimation under a small budget, ingest and fan-out rates.

Run:  .venv/bin/python benchmarks/bench_hub_memory.py [--quick] [--points N] [--subscribers N]

Everything runs in-process on one thread (no sockets): it measures the hub's
own cost, the part every transport pays. Bounded: the full run takes well
under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
import tracemalloc
from array import array

from lightning_stream.config import ServerConfig
from lightning_stream.hub import Hub
from lightning_stream.scalars import ScalarBatch
from lightning_stream.wire import payload_json, ws_json


def make_batches(points: int, tags: int, batch_size: int, start_step: int = 0) -> list[ScalarBatch]:
    """Reader-like batches: ``tags`` series written in lock step, ``batch_size`` points per batch."""
    per_tag = points // tags
    out = []
    for first in range(0, per_tag, batch_size):
        steps = range(start_step + first, start_step + min(per_tag, first + batch_size))
        for t in range(tags):
            out.append(
                ScalarBatch(
                    "version_0",
                    f"tag_{t}",
                    array("q", steps),
                    array("d", [1.7e9 + s * 0.01 for s in steps]),
                    array("d", [math.sin(s / 100 + t) for s in steps]),
                )
            )
    return out


def bench_memory(points: int) -> dict[str, float]:
    batches = make_batches(points, tags=10, batch_size=1000)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    hub = Hub(ServerConfig(memory_budget_bytes=1 << 40, replay_points=1))
    hub.ingest(batches)
    hub.flush()
    del batches
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stats = hub.stats()
    return {
        "points": stats["points_held"],
        "array bytes/point": stats["bytes_held"] / stats["points_held"],
        "traced bytes/point": traced / stats["points_held"],
    }


def bench_ingest(points: int) -> dict[str, float]:
    hub = Hub(ServerConfig(memory_budget_bytes=1 << 40))
    batches = make_batches(points, tags=10, batch_size=1000)
    t0 = time.perf_counter()
    hub.ingest(batches)
    hub.flush()
    bulk = points / (time.perf_counter() - t0)

    singles = make_batches(points // 10, tags=10, batch_size=1, start_step=10**9)
    t0 = time.perf_counter()
    for i in range(0, len(singles), 50):  # 50 single-point batches per tick, as publish() delivers them
        hub.ingest(singles[i : i + 50])
        hub.flush()
    single = len(singles) / (time.perf_counter() - t0)

    sub = hub.subscribe(since=hub.seq - hub.stats()["replay_messages"])  # the oldest replayable message
    t0 = time.perf_counter()
    encoded = 0
    while (msg := sub.get_nowait()) is not None:
        if msg.kind == "scalars":
            payload_json(msg, sub)
            encoded += msg.points_for(sub)
    encode = encoded / (time.perf_counter() - t0)
    return {"bulk points/s": bulk, "single-point batches/s": single, "encode points/s": encode}


def bench_fanout(subscribers: int, rate: int, seconds: float) -> dict[str, float]:
    """CPU time the hub spends per simulated second delivering ``rate`` points/s to every subscriber."""
    hub = Hub(ServerConfig(tick_s=0.005))
    subs = [hub.subscribe() for i in range(subscribers)]  # half read the WebSocket form
    ticks = int(seconds / 0.005)
    per_tick = max(1, rate // 200)
    step = 0
    t0 = time.process_time()
    for _ in range(ticks):
        steps = range(step, step + per_tick)
        step += per_tick
        hub.ingest(
            [
                ScalarBatch(
                    "run", "loss", array("q", steps), array("d", [1.7e9] * per_tick), array("d", [0.5] * per_tick)
                )
            ]
        )
        hub.flush()
        for i, sub in enumerate(subs):
            while (msg := sub.get_nowait()) is not None:
                ws_json(msg, sub) if i % 2 else payload_json(msg, sub)
    cpu = time.process_time() - t0
    stats = hub.stats()
    return {
        "subscribers": subscribers,
        "points/s in": rate,
        "hub CPU s per s": cpu / seconds,
        "resets": stats["resets"],
        "points out": stats["points_out"],
    }


def bench_decimation(points: int, budget: int) -> dict[str, float]:
    hub = Hub(ServerConfig(memory_budget_bytes=budget, replay_points=1))
    batches = make_batches(points, tags=4, batch_size=1000)
    spike_step = points // 4 // 10
    for b in batches:  # one old spike per series that decimation must keep
        if b.steps[0] <= spike_step < b.steps[0] + len(b):
            b.values[spike_step - b.steps[0]] = 1e6
    t0 = time.perf_counter()
    hub.ingest(batches)
    elapsed = time.perf_counter() - t0
    stats = hub.stats()
    kept = True
    for tag in hub.tags("version_0"):
        held = hub.scalars("version_0", tag)
        kept &= held.steps[0] == 0 and held.steps[-1] == points // 4 - 1 and max(held.values) == 1e6
    return {
        "budget MiB": budget / 2**20,
        "points in": stats["points_in"],
        "points held": stats["points_held"],
        "bytes held MiB": stats["bytes_held"] / 2**20,
        "decimations": stats["decimations"],
        "ingest s": elapsed,
        "first/newest/spike kept": kept,
    }


def show(title: str, row: dict[str, float]) -> None:
    print(f"\n{title}")
    for key, value in row.items():
        if isinstance(value, bool):
            text = "yes" if value else "NO"
        elif isinstance(value, float):
            text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        else:
            text = f"{value:,}"
        print(f"  {key:<28} {text:>16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    points = 100_000 if args.quick else args.points
    subscribers = 50 if args.quick else args.subscribers
    print(f"bench_hub_memory: {points:,} points, load average {os.getloadavg()[0]:.2f} (1 min), pid {os.getpid()}")
    show("memory held (bytes/point; target <= 32)", bench_memory(points))
    show("ingest and encode throughput", bench_ingest(points))
    show("in-hub fan-out at 10,000 points/s", bench_fanout(subscribers, 10_000, 0.2 if args.quick else 2.0))
    show("decimation under a small budget", bench_decimation(points, 4 * 2**20 if not args.quick else 2**20))


if __name__ == "__main__":
    main()

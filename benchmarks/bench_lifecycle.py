"""Server lifecycle benchmark: cold acquire, release → port free, acquire/release cycles on one port.

Run:  .venv/bin/python benchmarks/bench_lifecycle.py [--cycles 1000] [--quick]

Goals (issue 4): 0 failures over 1,000 acquire/release cycles on one fixed port, p99 cycle
≤ 50 ms. A failure is any exception from acquire/release, a server not on the fixed port,
or the port not bindable the moment ``release()`` returned. The seed's approach (stop, then
``time.sleep(1)``, then "clean" the port by test-binding it) costs ≥ 1,000 ms per cycle and
still failed its own start/stop/start test with EADDRINUSE; it is quoted, not re-run.

Uses a throw-away registry directory, the default ``ServerConfig`` otherwise (registry
entries written with fsync, watchdog thread on), on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # pragma: no cover - Windows
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000, help="acquire/release cycles on one fixed port")
    parser.add_argument("--quick", action="store_true", help="50 cycles: a smoke run")
    args = parser.parse_args(argv)
    cycles = 50 if args.quick else args.cycles

    registry = tempfile.TemporaryDirectory(prefix="ls-bench-registry-")
    os.environ["LIGHTNING_STREAM_REGISTRY_DIR"] = registry.name

    t0 = time.perf_counter()
    from lightning_stream.manager import StreamServerManager
    from lightning_stream.ports import bind_listener

    import_s = time.perf_counter() - t0
    manager = StreamServerManager()

    # cold: the first acquire of the process (loop thread, app, bind, /health, registry entry)
    t0 = time.perf_counter()
    server = manager.acquire()
    cold_ms = (time.perf_counter() - t0) * 1000
    port = server.port
    t0 = time.perf_counter()
    manager.release()
    release_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    bind_listener("127.0.0.1", port).close()
    rebind_ms = (time.perf_counter() - t0) * 1000

    failures: list[str] = []
    cycle_ms: list[float] = []
    acquire_ms: list[float] = []
    release_ms_all: list[float] = []
    started = time.perf_counter()
    for i in range(cycles):
        t0 = time.perf_counter()
        try:
            server = manager.acquire(port=port, strict_port=True)
            t1 = time.perf_counter()
            if server.port != port:
                failures.append(f"cycle {i}: served on {server.port}, not {port}")
            manager.release()
            t2 = time.perf_counter()
            bind_listener("127.0.0.1", port).close()  # free the moment release() returned
        except Exception as exc:
            failures.append(f"cycle {i}: {exc!r}")
            manager.cleanup()
            continue
        cycle_ms.append((t2 - t0) * 1000)
        acquire_ms.append((t1 - t0) * 1000)
        release_ms_all.append((t2 - t1) * 1000)
    total_s = time.perf_counter() - started

    # publish(): the cost to the training thread, per call (deque append + rare wake-up)
    server = manager.acquire()
    n_publish = 20_000 if args.quick else 200_000
    t0 = time.perf_counter()
    for step in range(n_publish):
        server.publish("bench", "loss", step, 0.5)
    publish_us = (time.perf_counter() - t0) / n_publish * 1e6
    manager.cleanup()
    leftovers = os.listdir(registry.name)
    registry.cleanup()

    rows = [
        ("import lightning_stream.manager", f"{import_s * 1000:.1f} ms", ""),
        ("cold acquire → ready (/health answers)", f"{cold_ms:.1f} ms", ""),
        ("release → returned (port free)", f"{release_ms:.1f} ms", ""),
        ("re-bind right after release", f"{rebind_ms:.2f} ms", "no EADDRINUSE"),
        (f"cycles on port {port}", f"{len(cycle_ms)} ok / {cycles}", f"{total_s:.1f} s total"),
        ("failures", str(len(failures)), "goal 0"),
        ("cycle p50", f"{statistics.median(cycle_ms):.1f} ms" if cycle_ms else "-", ""),
        ("cycle p99", f"{percentile(cycle_ms, 99):.1f} ms" if cycle_ms else "-", "goal ≤ 50 ms"),
        ("cycle max", f"{max(cycle_ms):.1f} ms" if cycle_ms else "-", ""),
        ("  acquire p50 / p99", _pair(acquire_ms), ""),
        ("  release p50 / p99", _pair(release_ms_all), ""),
        ("registry files left", str(len(leftovers)), "goal 0"),
        (f"publish() per call ({n_publish:,} calls)", f"{publish_us:.2f} µs", "caller's thread"),
        ("seed (sleep(1) per stop)", "≥ 1000 ms", "and EADDRINUSE on restart"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"lightning-stream lifecycle benchmark  (python {sys.version.split()[0]}, load {load()})")
    print("-" * (width + 40))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    for failure in failures[:10]:
        print("FAILURE", failure)
    ok = not failures and not leftovers
    return 0 if ok else 1


def _pair(samples: list[float]) -> str:
    if not samples:
        return "-"
    return f"{statistics.median(samples):.1f} / {percentile(samples, 99):.1f} ms"


if __name__ == "__main__":
    sys.exit(main())

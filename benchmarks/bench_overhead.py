"""Training speed cost of streaming: TensorBoard logger alone vs. + StreamCallback and 10 clients.

The same tiny model (one thread, logging every step) is trained in interleaved
rounds, A B A B ..., so drift of the machine hits both sides alike:

* A: ``TensorBoardLogger`` alone;
* B: ``TensorBoardLogger`` + ``StreamCallback`` with 10 SSE clients connected
  (in a separate process and session, like real viewers: a browser is not in the
  training's session, so not in its autogroup either).

Reports steps/s per side (median over rounds), the slowdown of each round (B
against its A), their median and a bootstrap interval of that median: single
rounds on a shared 2-core machine vary by 10-20 %, so one pair proves little.

    python benchmarks/bench_overhead.py            # 20 rounds x 2000 steps, server in a child process
    python benchmarks/bench_overhead.py --thread   # the same with the server on a thread of the training process
    python benchmarks/bench_overhead.py --bare-reader   # anchor: B is only a process reading the event files
    python benchmarks/bench_overhead.py --with-floor    # A, B and C = the bare reader in every round
    python benchmarks/bench_overhead.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLIENTS = r"""
import asyncio, sys
import aiohttp

async def one(session, url):
    async with session.get(url + "/stream", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        async for _ in resp.content:
            pass

async def main(url, n):
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(one(session, url)) for _ in range(n)]
        await asyncio.sleep(0.5)
        print("ready", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

BARE_READER = r"""
import os, sys, time
offsets = {}
while True:  # what any viewer outside the training process must at least do: read the new bytes
    for directory, _, files in os.walk(sys.argv[1]):
        for name in files:
            if "tfevents" in name:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    f.seek(offsets.get(path, 0))
                    offsets[path] = offsets.get(path, 0) + len(f.read())
    time.sleep(0.02)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--flush-interval", type=float, default=0.1, help="StreamCallback(flush_interval_s=...)")
    parser.add_argument(
        "--thread", dest="isolated", action="store_false", help="serve from a thread of the training process"
    )
    parser.add_argument(
        "--bare-reader",
        action="store_true",
        help="B = no StreamCallback, only a process re-reading the event files every 20 ms (the floor for any viewer)",
    )
    parser.add_argument(
        "--with-floor",
        action="store_true",
        help="also run C = the bare reader in every round, so B is compared with that floor under the same drift",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.with_floor and args.bare_reader:
        parser.error("--with-floor already runs the bare reader as a third side; drop --bare-reader")
    if args.quick:
        args.rounds, args.steps = 1, 300

    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_stream import StreamCallback, get_stream_server_manager

    torch.set_num_threads(1)

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    import psutil

    others = {"server": None, "clients": None}  # psutil.Process of the server (if not us) and the clients

    class Clock(Callback):
        """Wall and CPU time of the training loop, and the CPU the other processes used meanwhile."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.cpu0 = {name: _cpu(proc) for name, proc in others.items()}
            self.wakes0 = {name: _wakeups(proc) for name, proc in others.items()}
            self.threads0 = _thread_cpu_s()
            self.t0, self.p0 = time.perf_counter(), time.process_time()
            self.wait0, self.sys0 = _run_queue_wait_s(), os.times().system

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.elapsed = time.perf_counter() - self.t0
            self.cpu_ms_per_step = 1000 * (time.process_time() - self.p0) / args.steps
            self.wait_us_per_step = 1e6 * (_run_queue_wait_s() - self.wait0) / args.steps
            self.sys_ms_per_step = 1000 * (os.times().system - self.sys0) / args.steps
            self.others_pct = {
                name: 100 * (_cpu(proc) - self.cpu0[name]) / self.elapsed for name, proc in others.items()
            }
            self.others_wakeups = {
                name: (_wakeups(proc) - self.wakes0[name]) / self.elapsed for name, proc in others.items()
            }
            self.thread_ms_per_step = _per_thread(self.threads0, _thread_cpu_s(), args.steps)

    x = torch.randn(args.steps * 8, 8)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))

    manager = get_stream_server_manager()
    server = manager.acquire(isolated=args.isolated)  # one server for all B rounds; clients stay connected
    # Since 2026-12-03 in a session of their own, as real viewers are (a browser is not in the training's
    # session): with autogroup scheduling (Linux's default) a process of the training's session shares
    # its CPU share, so its wake-ups were charged to training in a way no real viewer's are.
    clients = subprocess.Popen(
        [sys.executable, "-c", CLIENTS, server.url.rstrip("/"), str(args.clients)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert clients.stdout is not None
    assert clients.stdout.readline().strip() == "ready"
    others["clients"] = psutil.Process(clients.pid)
    if server.pid != os.getpid():
        others["server"] = psutil.Process(server.pid)

    def fit(side: str, i: int) -> Clock:
        """Side "a": logger alone; "b": + StreamCallback (or the bare reader); "c": the bare reader."""
        if side == "c" or (side == "b" and args.bare_reader):
            reader = subprocess.Popen(
                [sys.executable, "-c", BARE_READER, str(tmp / f"{side}{i}")], start_new_session=True
            )
            server_process, others["server"] = others["server"], psutil.Process(reader.pid)
            try:
                return fit_once(False, i, name=f"{side}{i}")
            finally:
                reader.kill()
                reader.wait()
                others["server"] = server_process
        return fit_once(side == "b", i)

    def fit_once(streaming: bool, i: int, name: str | None = None) -> Clock:
        clock = Clock()
        callbacks: list[Any] = [clock] + (
            [StreamCallback(flush_interval_s=args.flush_interval, isolated=args.isolated)] if streaming else []
        )
        trainer = Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=TensorBoardLogger(str(tmp), name=name or f"{'b' if streaming else 'a'}{i}"),
            callbacks=callbacks,
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Tiny(), data)
        return clock

    fit("a", -1)  # warm-up
    a: list[Clock] = []
    b: list[Clock] = []
    c: list[Clock] = []
    sides = ("a", "b", "c") if args.with_floor else ("a", "b")
    for i in range(args.rounds):
        # A B, then B A (or A B C, then C B A): a machine drifting within a round hits every side alike
        order = sides if i % 2 == 0 else sides[::-1]
        result = {side: fit(side, i) for side in order}
        a.append(result["a"])
        b.append(result["b"])
        line = f"round {i}: logger alone {args.steps / a[-1].elapsed:7.1f} steps/s   "
        line += f"+ stream {args.steps / b[-1].elapsed:7.1f} steps/s"
        if args.with_floor:
            c.append(result["c"])
            line += f"   bare reader {args.steps / c[-1].elapsed:7.1f} steps/s"
        print(line, file=sys.stderr)
    with urllib.request.urlopen(server.url.rstrip("/") + "/health", timeout=10) as response:
        health = json.load(response)
    clients.terminate()
    manager.release(server)

    def median(clocks: list[Clock], value: Callable[[Clock], float]) -> float:
        return statistics.median(value(c) for c in clocks)

    slowdowns = [100 * (bi.elapsed / ai.elapsed - 1) for ai, bi in zip(a, b, strict=True)]
    low, high = _bootstrap_median(slowdowns)
    if args.bare_reader:
        where = "none (B: a bare reader process instead of StreamCallback, clients idle)"
    elif health["pid"] != os.getpid():
        where = f"a child process (pid {health['pid']})"
    else:
        where = "a thread of the training process"
    clients_now = sum(health["clients"].values())
    print(f"\n{args.rounds} interleaved rounds (ABBA) x {args.steps} steps, load {os.getloadavg()[0]:.2f}")
    print(f"server: {where}; {clients_now} clients connected at the end; {health['events_total']} points served")
    print(f"{'':46} {'logger alone':>14} {'+ stream':>14}")
    rows: list[tuple[str, Callable[[Clock], float], str]] = [
        ("steps/s (median)", lambda c: args.steps / c.elapsed, ".1f"),
        ("training process CPU per step, ms (median)", lambda c: c.cpu_ms_per_step, ".3f"),
        ("  of which in the kernel (system time)", lambda c: c.sys_ms_per_step, ".3f"),
        ("training threads' run-queue wait per step, µs", lambda c: c.wait_us_per_step, ".1f"),
        ("server (or bare reader) process CPU, % of a core", lambda c: c.others_pct["server"], ".1f"),
        (f"{args.clients} SSE clients' process CPU, % of a core", lambda c: c.others_pct["clients"], ".1f"),
    ]
    for label, value, fmt in rows:
        if label.startswith("server") and server.pid == os.getpid() and not args.bare_reader:
            continue
        print(f"{label:46} {median(a, value):14{fmt}} {median(b, value):14{fmt}}")
    # Added 2026-12-03: where the training process's CPU goes (per thread), the paired difference of
    # its CPU per step (the per-side medians above can differ by more than the pairs do), and how
    # often the server and the clients woke up. Reporting only: A and B run exactly as before.
    names = sorted({n for c in a + b for n in c.thread_ms_per_step}, key=lambda n: (n != "main thread", n))
    for name in names:
        label = f"  {name}, CPU ms per step"
        a_ms = statistics.median(c.thread_ms_per_step.get(name, 0.0) for c in a)
        b_ms = statistics.median(c.thread_ms_per_step.get(name, 0.0) for c in b)
        if max(a_ms, b_ms) >= 0.0005:
            print(f"{label[:46]:46} {a_ms:14.4f} {b_ms:14.4f}")
    for name in others:
        if name == "server" and server.pid == os.getpid() and not args.bare_reader:
            continue
        label = f"{'server (or bare reader)' if name == 'server' else 'SSE clients'} wake-ups per second"
        a_wakes = statistics.median(c.others_wakeups[name] for c in a)
        b_wakes = statistics.median(c.others_wakeups[name] for c in b)
        print(f"{label:46} {a_wakes:14.1f} {b_wakes:14.1f}")
    for label, value in (
        ("training CPU per step, B - A of each round, median", lambda c: c.cpu_ms_per_step),
        ("  of which in the kernel, B - A, median", lambda c: c.sys_ms_per_step),
    ):
        diffs = [value(bi) - value(ai) for ai, bi in zip(a, b, strict=True)]
        diff_low, diff_high = _bootstrap_median(diffs)
        print(f"{label:52} {statistics.median(diffs):+7.3f} ms [90 %: {diff_low:+.3f} .. {diff_high:+.3f}]")
    print(f"{'slowdown (wall time per step), median of the rounds':52} {statistics.median(slowdowns):7.2f} %")
    print(f"{'  90 % bootstrap interval of that median':52} {low:7.2f} % .. {high:.2f} %")
    print(f"{'  rounds':52} " + " ".join(f"{x:.1f}" for x in slowdowns))
    if args.with_floor:
        print(
            f"\nC: a bare reader process (the floor for any viewer), in the same rounds: {median(c, lambda k: args.steps / k.elapsed):.1f} steps/s"
        )
        for label, pairs in (
            ("C against A (the floor)", zip(a, c, strict=True)),
            ("B against C (what streaming adds above the floor)", zip(c, b, strict=True)),
        ):
            diffs = [100 * (y.elapsed / x.elapsed - 1) for x, y in pairs]
            lo, hi = _bootstrap_median(diffs)
            print(f"{label:52} {statistics.median(diffs):7.2f} %  [90 %: {lo:.2f} .. {hi:.2f}]")


def _cpu(proc: Any) -> float:
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def _wakeups(proc: Any) -> int:
    """Voluntary context switches of all of a process's threads: how often it slept and woke."""
    if proc is None:
        return 0
    total = 0
    for task in proc.threads():
        try:
            with open(f"/proc/{proc.pid}/task/{task.id}/status") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (OSError, ValueError):
            continue
    return total


def _thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native thread id (Linux; else {})."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue
    return out


def _per_thread(before: dict[int, float], after: dict[int, float], steps: int) -> dict[str, float]:
    """CPU ms per step of this process's threads, by a name stable across rounds.

    Python threads go by their name with digits dropped ("lightning-stream-to-PID"), or by their
    class when unnamed (TensorBoard's "_AsyncWriterThread"); threads Python does not know (torch's)
    by their kernel name.
    """
    import re
    import threading

    known = {t.native_id: t for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        thread = known.get(tid)
        if thread is threading.main_thread():
            name = "main thread"
        elif thread is not None:
            generic = re.fullmatch(r"Thread-\d+( \(.*\))?", thread.name)
            name = type(thread).__name__ if generic else re.sub(r"\d+", "N", thread.name)
        else:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = "native " + f.read().strip()
            except OSError:
                name = "native"
        out[name] = out.get(name, 0.0) + 1000 * (cpu - before.get(tid, 0.0)) / steps
    return out


def _run_queue_wait_s() -> float:
    """Time this process's threads spent runnable but waiting for a CPU (Linux schedstat; else 0).

    The direct measure of contention: CPU per step shows streaming work done *in* the training
    process, this shows training waiting while other processes (server, clients) held the CPUs.
    """
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return total / 1e9


def _bootstrap_median(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentile of the median of ``values`` resampled with replacement."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.05 * n)], medians[int(0.95 * n) - 1]


if __name__ == "__main__":
    main()

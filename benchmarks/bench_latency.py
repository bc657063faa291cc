"""Write→receive latency of a live Lightning run: lightning-stream vs. a polled TensorBoard.

A real ``Trainer.fit`` on a tiny model logs every step (``log_every_n_steps=1``).
A logger subclass records the wall time at which each value is handed to the
writer. Clients in a separate process receive points:

* lightning-stream over SSE and over WebSocket (the server the callback runs);
* TensorBoard servers on the same logdir (default settings, and
  ``--reload_interval 1``), polled over their HTTP API every 50 ms, first sighting
  of each step counts (the anchor: the issue measured median 2.5 s / 0.36 s).

Latency = receipt time - write time, per point. Reports n, p50, p99, max.

    python benchmarks/bench_latency.py               # ~40 s of training
    python benchmarks/bench_latency.py --quick       # a few seconds, no TensorBoard
    python benchmarks/bench_latency.py --no-tensorboard --step-delay 0 --more-clients 8   # full speed, 10 clients
    python benchmarks/bench_latency.py --no-tensorboard --steps-per-s 200   # paced: the latency goal's edge

``--step-delay`` sleeps a fixed time a step, so the rate it gives moves with the machine's speed
(0.003 s gave ~190 steps/s one session and ~225 the next); ``--steps-per-s`` paces the steps to a
deadline instead. Either way the report prints the rate the points were written at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENT = r"""
import asyncio, json, sys, time, urllib.request
import aiohttp

url, tb_urls, run, out_path, duration = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
more = int(sys.argv[6])  # further SSE clients that only read, as more viewers would
seen = {}  # (contender, tag, step) -> receipt time

async def sse(session):
    async with session.get(url + "/stream", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        print("ready sse", flush=True)
        event, data = "", ""
        async for raw in resp.content:
            now = time.time()
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                if event == "scalars":
                    for p in json.loads(data)["points"]:
                        seen.setdefault(("sse", p["tag"], p["step"]), now)
                event, data = "", ""

async def drain(session):
    async with session.get(url + "/stream", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        async for _ in resp.content:
            pass

async def ws(session):
    async with session.ws_connect(url + "/ws") as sock:
        await sock.send_json({"op": "subscribe", "run": "*", "tag": "*"})
        print("ready ws", flush=True)
        async for msg in sock:
            now = time.time()
            body = json.loads(msg.data)
            if body.get("type") == "scalars":
                for p in body["points"]:
                    seen.setdefault(("ws", p["tag"], p["step"]), now)

async def tensorboard(session, name, base):
    tag = "train/loss"
    while True:
        try:
            async with session.get(f"{base}/data/plugin/scalars/scalars", params={"run": run, "tag": tag}) as resp:
                if resp.status == 200:
                    now = time.time()
                    for wall, step, value in await resp.json():
                        seen.setdefault((name, tag, step), now)
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)

async def main():
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(sse(session)), asyncio.create_task(ws(session))]
        tasks += [asyncio.create_task(tensorboard(session, n, b)) for n, b in tb_urls.items()]
        tasks += [asyncio.create_task(drain(session)) for _ in range(more)]
        await asyncio.sleep(duration)
        for t in tasks:
            t.cancel()
    with open(out_path, "w") as f:
        json.dump([[c, t, s, r] for (c, t, s), r in seen.items()], f)

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--step-delay", type=float, default=0.02, help="seconds of 'work' per step")
    parser.add_argument(
        "--steps-per-s",
        type=float,
        default=0.0,
        help="pace the steps to this rate (a deadline per step) instead of --step-delay",
    )
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument(
        "--more-clients",
        type=int,
        default=0,
        help="further SSE clients that only read (a busy run is then read less often)",
    )
    parser.add_argument(
        "--thread", dest="isolated", action="store_false", help="serve from a thread of the training process"
    )
    parser.add_argument("--quick", action="store_true", help="200 steps, no TensorBoard anchor")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.no_tensorboard = 200, True
    if args.steps_per_s < 0:
        parser.error("--steps-per-s must be > 0 (or 0: not paced)")
    if args.steps_per_s:
        args.step_delay = 0.0

    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_stream import StreamCallback, get_stream_server_manager

    write_times: dict[tuple[str, int], float] = {}
    step_s = 1.0 / args.steps_per_s if args.steps_per_s else args.step_delay  # seconds a step, at least
    next_step_at: float | None = None

    def pace() -> None:
        """Sleep until this step's slot: the first step sets the clock, each one after is 1/rate later."""
        nonlocal next_step_at
        now = time.perf_counter()
        next_step_at = (now if next_step_at is None else next_step_at) + step_s
        if next_step_at > now:
            time.sleep(next_step_at - now)

    class TimedLogger(TensorBoardLogger):
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            now = time.time()
            for tag in metrics:
                write_times.setdefault((tag, int(step or 0)), now)
            super().log_metrics(metrics, step)

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(8, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self.layer(x), y)
            self.log("train/loss", loss)
            if args.step_delay:
                time.sleep(args.step_delay)
            elif args.steps_per_s:
                pace()
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    logdir = tmp / "logs"
    run = "tiny/version_0"
    (logdir / "tiny" / "version_0").mkdir(parents=True)
    manager = get_stream_server_manager()
    server = manager.acquire(isolated=args.isolated)  # what StreamCallback does by default; it reuses this one
    tb_procs: list[subprocess.Popen[bytes]] = []
    tb_urls: dict[str, str] = {}
    if not args.no_tensorboard:
        for name, extra in (
            ("tensorboard default", []),
            ("tensorboard --reload_interval 1", ["--reload_interval", "1"]),
        ):
            port = free_port()
            tb = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
            cmd = [tb, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1", *extra]
            tb_procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            tb_urls[name] = f"http://127.0.0.1:{port}"
        for base in tb_urls.values():
            wait_http(base + "/data/runs")

    n = args.steps * 8
    x = torch.randn(n, 8)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    duration_guess = args.steps * (step_s + 0.004) + 15
    out = tmp / "received.json"
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLIENT,
            server.url.rstrip("/"),
            json.dumps(tb_urls),
            run,
            str(out),
            str(duration_guess),
            str(args.more_clients),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    ready = {client.stdout.readline().strip(), client.stdout.readline().strip()}
    assert ready == {"ready sse", "ready ws"}, ready

    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=TimedLogger(str(logdir), name="tiny", version=0),
        callbacks=[StreamCallback(isolated=args.isolated)],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    started = time.time()
    trainer.fit(Tiny(), data)
    print(f"training: {args.steps} steps in {time.time() - started:.1f} s; waiting for clients...", file=sys.stderr)
    client.wait()
    for proc in tb_procs:
        proc.terminate()
    manager.release(server)

    received = json.loads(out.read_text())
    by_contender: dict[str, list[float]] = {}
    for contender, tag, step, at in received:
        if tag != "train/loss":  # the tag every contender follows
            continue
        written = write_times.get((tag, step))
        if written is not None:
            by_contender.setdefault(contender, []).append((at - written) * 1000)
    names = {"sse": "lightning-stream SSE", "ws": "lightning-stream WebSocket", **{k: k for k in tb_urls}}
    load = os.getloadavg()
    loss_times = sorted(t for (tag, _), t in write_times.items() if tag == "train/loss")
    rate = (len(loss_times) - 1) / (loss_times[-1] - loss_times[0]) if len(loss_times) > 1 else 0.0
    where = "a child process" if args.isolated else "a thread of the training process"
    print(
        f"\nwrite→receive latency, {len(write_times)} points written, load avg {load[0]:.2f}, server in {where}, "
        f"{2 + args.more_clients} lightning-stream clients; written at {rate:.1f} steps/s per series"
    )
    print(f"{'contender':34} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for key, label in names.items():
        lat = by_contender.get(key, [])
        if not lat:
            print(f"{label:34} {0:>6}")
            continue
        print(f"{label:34} {len(lat):>6} {statistics.median(lat):>9.1f} {percentile(lat, 0.99):>9.1f} {max(lat):>9.1f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

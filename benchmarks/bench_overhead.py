"""Training speed cost of streaming: TensorBoard logger alone vs. + StreamCallback and 10 clients.

The same tiny model (one thread, logging every step) is trained in interleaved
rounds, A B A B ..., so drift of the machine hits both sides alike:

* A: ``TensorBoardLogger`` alone;
* B: ``TensorBoardLogger`` + ``StreamCallback`` with 10 SSE clients connected
  (in a separate process, like real viewers).

Reports steps/s per side (median over rounds) and the ratio B/A.

    python benchmarks/bench_overhead.py            # 5 rounds x 3000 steps
    python benchmarks/bench_overhead.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--flush-interval", type=float, default=0.1, help="StreamCallback(flush_interval_s=...)")
    parser.add_argument(
        "--thread", dest="isolated", action="store_false", help="serve from a thread of the training process"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
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

    class Clock(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.elapsed = time.perf_counter() - self.t0

    x = torch.randn(args.steps * 8, 8)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))

    manager = get_stream_server_manager()
    server = manager.acquire(isolated=args.isolated)  # one server for all B rounds; clients stay connected
    clients = subprocess.Popen(
        [sys.executable, "-c", CLIENTS, server.url.rstrip("/"), str(args.clients)], stdout=subprocess.PIPE, text=True
    )
    assert clients.stdout is not None
    assert clients.stdout.readline().strip() == "ready"

    def fit(streaming: bool, i: int) -> float:
        clock = Clock()
        callbacks: list[Any] = [clock] + (
            [StreamCallback(flush_interval_s=args.flush_interval, isolated=args.isolated)] if streaming else []
        )
        trainer = Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=TensorBoardLogger(str(tmp), name=f"{'b' if streaming else 'a'}{i}"),
            callbacks=callbacks,
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Tiny(), data)
        return args.steps / clock.elapsed

    fit(False, -1)  # warm-up
    a: list[float] = []
    b: list[float] = []
    for i in range(args.rounds):
        a.append(fit(False, i))
        b.append(fit(True, i))
        print(f"round {i}: logger alone {a[-1]:7.1f} steps/s   + stream {b[-1]:7.1f} steps/s", file=sys.stderr)
    clients.terminate()
    manager.release(server)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"\nsteps/s (median of {args.rounds} interleaved rounds, {args.steps} steps, load {os.getloadavg()[0]:.2f})")
    print(f"{'TensorBoardLogger alone':40} {ma:8.1f}")
    print(f"{'+ StreamCallback, ' + str(args.clients) + ' SSE clients':40} {mb:8.1f}")
    print(f"{'slowdown':40} {100 * (1 - mb / ma):7.2f} %")


if __name__ == "__main__":
    main()

"""Watch a Fabric training loop live: Fabric's TensorBoardLogger, watched through the server manager.

    python examples/fabric_with_stream.py             # open the printed URL
    python examples/fabric_with_stream.py --steps 8   # a short run (the tests do this)

Fabric has no trainer callbacks, so ``StreamCallback`` does not apply; the server manager (or
``lightning-stream serve logs`` in a terminal) watches the logger's directory instead.
"""

from __future__ import annotations

import argparse

import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers.tensorboard import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamClient, get_stream_server_manager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="fabric_logs", help="the logger's root directory")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    args = parser.parse_args()

    logger = TensorBoardLogger(args.root, name="fabric")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    model = nn.Linear(16, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)
    x = torch.randn(args.steps * 8, 16, generator=torch.Generator().manual_seed(0))
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8))

    with get_stream_server_manager().acquire(isolated=True) as server:
        if fabric.is_global_zero:
            run = server.watch(logger.root_dir)  # every version of every run under it
            print(f"lightning-stream: live at {server.url} (watching {run!r} = {logger.root_dir})", flush=True)
        for step, (inputs, targets) in enumerate(loader):
            loss = nn.functional.mse_loss(model(inputs), targets)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            fabric.log("train/loss", loss.item(), step=step)
            logger.save()  # flush now: tensorboardX's writer (or a remote logdir) holds writes up to 120 s
        if fabric.is_global_zero:
            server.unwatch(logger.root_dir)  # reads what was flushed last
            points = StreamClient(server.url).scalars(f"fabric/version_{logger.version}", "train/loss")
            print(f"streamed {len(points)} points of train/loss", flush=True)
    logger.finalize("success")


if __name__ == "__main__":
    main()

"""Train a tiny model on synthetic data and watch it live in the browser.

    python examples/train_with_stream.py            # ~2 minutes; open the printed URL
    python examples/train_with_stream.py --epochs 2 --step-delay 0

On a terminal the dashboard stays up after training until Ctrl-C (``--exit`` ends at once), so the curves can
be studied: the server the callback launched lives as long as this process.

Nothing is downloaded: the data is a noisy linear problem made on the spot.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamCallback


class TinyRegressor(LightningModule):
    """A two-layer MLP; logs train/val loss, a learning rate and a made-up accuracy."""

    def __init__(self, lr: float = 0.05, step_delay: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        self.lr = lr
        self.step_delay = step_delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        self.log("train/accuracy", (self(x) - y).abs().lt(0.5).float().mean())
        if self.step_delay:
            time.sleep(self.step_delay)  # make the demo slow enough to watch
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self(x), y), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.97)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_epoch_end(self) -> None:
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])  # type: ignore[union-attr]


def make_data(samples: int, seed: int = 0) -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 16, generator=generator)
    w = torch.randn(16, 1, generator=generator)
    y = x @ w + 0.3 * torch.randn(samples, 1, generator=generator)
    split = int(samples * 0.8)
    train = TensorDataset(x[:split], y[:split])
    val = TensorDataset(x[split:], y[split:])
    return DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--step-delay", type=float, default=0.02, help="seconds to sleep per step (0: full speed)")
    parser.add_argument("--logdir", default="demo_logs")
    parser.add_argument("--port", type=int, default=None, help="fixed port (default: a free one)")
    parser.add_argument(
        "--exit", action="store_true", help="end when training ends (default on a terminal: wait for Ctrl-C)"
    )
    args = parser.parse_args(argv)

    train, val = make_data(args.samples)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=TensorBoardLogger(args.logdir, name="tiny"),
        callbacks=[StreamCallback(port=args.port)],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyRegressor(step_delay=args.step_delay), train, val)
    if args.exit or not sys.stdout.isatty():
        return
    print("training finished; the dashboard above stays up for the curves (Ctrl-C to exit)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

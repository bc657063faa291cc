"""Run by test_callback: a 2-process CPU DDP fit (gloo) with StreamCallback.

Rank 0 (the process the test starts) holds a server reference and an SSE client
before ``fit``; Lightning relaunches this script for rank 1 with ``LOCAL_RANK=1``.
Checks: only rank 0 serves, one registry entry, every logged point arrives.
Prints DDP-OK on success.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamCallback, get_stream_server_manager, list_servers
from tests.livetools import Subscriber


class Model(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.registry_sizes: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        if self.global_rank == 0:
            self.registry_sizes.append(len(list_servers()))
        elif get_stream_server_manager().is_server_running():
            raise AssertionError("rank 1 must not serve")
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(tmp: str) -> None:
    rank0 = "LOCAL_RANK" not in os.environ
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    logger = TensorBoardLogger(str(Path(tmp) / "logs"), name="ddp", version=0)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=logger,
        callbacks=[StreamCallback()],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Model()
    if not rank0:
        trainer.fit(model, data)
        return
    manager = get_stream_server_manager()
    held = manager.acquire()
    with Subscriber(held.url, "sse") as sse:
        trainer.fit(model, data)
        acc = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
        acc.Reload()
        expected = {("ddp/version_0", t, e.step) for t in acc.Tags()["scalars"] for e in acc.Scalars(t)}
        assert len(expected) >= 16, expected
        ok = sse.wait_for(lambda s: expected <= {(r, t, st) for r, t, st, _ in s.points}, timeout=30)
        assert ok, f"missing {sorted(expected - {(r, t, st) for r, t, st, _ in sse.points})[:5]}"
    assert model.registry_sizes, "no training step ran on rank 0"
    assert set(model.registry_sizes) == {1}, model.registry_sizes
    manager.release(held)
    assert list_servers() == []
    print("DDP-OK", len(expected), "points", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

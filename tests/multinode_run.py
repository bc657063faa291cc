"""Run by test_multinode: one "node" of a 2 nodes x 2 processes CPU DDP fit (gloo) with StreamCallback.

The test starts this script twice, with ``NODE_RANK=0`` and ``NODE_RANK=1`` and the
``MASTER_ADDR``/``MASTER_PORT`` that Lightning's ``LightningEnvironment`` reads; each copy
relaunches itself for its local rank 1 (Lightning sets ``LOCAL_RANK=1`` there). Global
ranks: node 0 = 0, 1; node 1 = 2, 3.

Every rank records, at each training step, whether this process serves (the manager's
``is_server_running()``, the callback's ``server``) and how many servers the shared
registry lists, and writes ``report-rank<R>.json`` after ``fit``.

Global rank 0 also talks to the test through files in ``TMP`` (every wait bounded):
it acquires a server reference before ``fit`` (so a client can subscribe before the first
point), writes ``ready.json`` with the URL, waits for ``subscribed``, fits, writes
``fit-done``, waits for ``client-done``, releases, and prints ``MN-OK``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamCallback, get_stream_server_manager, list_servers
from lightning_stream.registry import read_entries

WAIT_S = 180.0  # for the test's client; the test's own deadline ends us first


class Model(LightningModule):
    def __init__(self, callback: StreamCallback) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.callback = callback
        self.observed: list[dict[str, Any]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, sync_dist=True)
        self.observed.append(
            {
                "step": self.global_step,
                "manager_running": get_stream_server_manager().is_server_running(),
                "callback_serving": self.callback.server is not None,
                # the raw files: list_servers() would also health-check (and could prune under load)
                "registry": [[info.pid, info.url] for info in read_entries()],
            }
        )
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 waited {WAIT_S:.0f} s for {what} ({path}); is the test still running?")
        time.sleep(0.05)


def main(tmp: Path) -> None:
    global_zero = os.environ.get("NODE_RANK") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    callback = StreamCallback()
    trainer = Trainer(
        num_nodes=2,
        devices=2,
        accelerator="cpu",
        strategy="ddp",
        max_epochs=2,
        logger=TensorBoardLogger(str(tmp / "logs"), name="mn", version=0),
        callbacks=[callback],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Model(callback)
    manager = get_stream_server_manager()
    held = None
    if global_zero:
        held = manager.acquire()
        (tmp / "ready.json").write_text(json.dumps({"url": held.url, "pid": os.getpid()}))
        wait_for(tmp / "subscribed", "the SSE client")
    trainer.fit(model, data)
    report = {
        "pid": os.getpid(),
        "global_rank": trainer.global_rank,
        "node_rank": trainer.node_rank,
        "local_rank": trainer.local_rank,
        "world_size": trainer.world_size,
        "observed": model.observed,
        "callback_serving_after_fit": callback.server is not None,
        "refcount_after_fit": manager.refcount(),
    }
    if held is not None:
        (tmp / "fit-done").touch()
        wait_for(tmp / "client-done", "the SSE client to have every point")
        manager.release(held)
        report["running_after_release"] = manager.is_server_running()
        report["registry_after_release"] = [info.url for info in list_servers()]
    (tmp / f"report-rank{trainer.global_rank}.json").write_text(json.dumps(report))
    print(f"MN-OK rank {trainer.global_rank}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

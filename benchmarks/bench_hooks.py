"""What adding ``StreamCallback`` costs the training loop in Lightning's own hook dispatch.

Lightning calls every hook of every callback on every step, overridden or not
(``lightning.pytorch.trainer.call._call_callback_hooks``), unless the hook
attribute is not callable. This counts the callback hooks a real ``Trainer.fit``
of a tiny model dispatches per training step, and times one dispatch with no
extra callback, a no-op ``Callback``, and ``StreamCallback`` (which sets the
per-step hooks it does not use to ``None``), to give the cost per step of each.

    python benchmarks/bench_hooks.py
"""

from __future__ import annotations

import collections
import logging
import time
import warnings
from typing import Any


def main() -> None:
    warnings.filterwarnings("ignore")
    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.trainer import call
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_stream import StreamCallback

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no banner per Trainer

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(8, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def trainer(callbacks: list[Callback], steps: int = 1) -> Trainer:
        return Trainer(
            max_steps=steps,
            accelerator="cpu",
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    # 1. Which callback hooks one training step dispatches (counted over a real fit).
    steps = 200
    counts: collections.Counter[str] = collections.Counter()
    arguments: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    original = call._call_callback_hooks

    def counting(trainer: Any, hook_name: str, *args: Any, **kwargs: Any) -> None:
        counts[hook_name] += 1
        arguments[hook_name] = (args, kwargs)  # replayed below, as the loop passes them
        original(trainer, hook_name, *args, **kwargs)

    x = torch.randn(steps * 4, 8)
    call._call_callback_hooks = counting
    try:
        trainer([], steps).fit(Tiny(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))
    finally:
        call._call_callback_hooks = original
    per_step = {hook: n / steps for hook, n in counts.items() if n >= steps}
    print(f"callback hooks dispatched per training step ({len(per_step)}): {', '.join(sorted(per_step))}")

    # 2. Time of one dispatch of each of those hooks, per variant.
    def dispatch_us(callbacks: list[Callback], hook: str, n: int = 50_000) -> float:
        t = trainer(callbacks)
        t.strategy.connect(Tiny())
        best = float("inf")
        args, kwargs = arguments[hook]
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                call._call_callback_hooks(t, hook, *args, **kwargs)
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        return best

    variants: dict[str, list[Callback]] = {
        "no extra callback": [],
        "a no-op Callback()": [Callback()],
        "StreamCallback()": [StreamCallback()],
    }
    base: dict[str, float] = {}
    print(f"\n{'':24} {'µs per step in hook dispatch':>30} {'extra vs none':>14}")
    for name, callbacks in variants.items():
        cost = {hook: dispatch_us(callbacks, hook) * k for hook, k in per_step.items()}
        total = sum(cost.values())
        if not base:
            base = cost
        print(f"{name:24} {total:30.2f} {total - sum(base.values()):14.2f}")
    print(
        "\n(StreamCallback runs no hook body per step: it sets its per-step hooks to None, and a thread of its own"
        " flushes the writers every flush_interval_s)"
    )


if __name__ == "__main__":
    main()

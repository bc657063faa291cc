"""StreamCallback with a real ``Trainer.fit`` on tiny CPU models and real clients."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.needs import NO_TORCH_REASON

pytest.importorskip("lightning", reason=NO_TORCH_REASON)

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import SimpleProfiler
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamCallback, get_stream_server_manager, list_servers
from lightning_stream import callback as callback_module
from tests.livetools import Subscriber

pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


class Tiny(LightningModule):
    def __init__(self, fail_at_step: int | None = None, direct_writes: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.fail_at_step = fail_at_step
        self.direct_writes = direct_writes
        self.hook: Any = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("boom at step 5")
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        if self.direct_writes:
            # bypasses Lightning's log + flush: only the callback's flush cadence gets it out
            self.logger.experiment.add_scalar("direct/step", float(self.global_step), self.global_step)  # type: ignore[union-attr]
        if self.hook is not None:
            self.hook(self)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test/loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int = 64) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def make_trainer(tmp_path: Path, callback: StreamCallback, **kw: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "logger": TensorBoardLogger(str(tmp_path / "logs"), name="tiny"),
        "callbacks": [callback],
        "log_every_n_steps": 1,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
    }
    options.update(kw)
    return Trainer(**options)


def written_records(log_dir: str) -> list[tuple[str, int, float]]:
    """Every scalar record in the run's event files, in file order, read by TensorBoard's own loader.

    Lightning may write one (tag, step) twice (``epoch`` at a step where training and
    validation both log), so this keeps multiplicity.
    """
    records = []
    for path in sorted(Path(log_dir).glob("*tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                records.append((value.tag, event.step, float(tensor_util.make_ndarray(value.tensor).item())))
    return records


def written_points(log_dir: str) -> set[tuple[str, int, float]]:
    return set(written_records(log_dir))


def flusher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lightning-stream-flush" and t.is_alive()]


@pytest.fixture
def manager() -> Any:
    manager = get_stream_server_manager()
    yield manager
    manager.cleanup()


@pytest.mark.parametrize("isolated", [True, False], ids=["server-process", "server-thread"])
def test_every_logged_point_reaches_sse_and_ws_clients_during_fit(tmp_path: Path, manager: Any, isolated: bool) -> None:
    # hold a reference so clients can connect before fit; the callback reuses it
    held = manager.acquire(isolated=isolated)
    assert (held.pid != os.getpid()) is isolated
    callback = StreamCallback(isolated=isolated)
    trainer = make_trainer(tmp_path, callback)
    run = "tiny/version_0"
    lifecycle = {(run, "started"), (run, "epoch"), (run, "finished")}
    with Subscriber(held.url, "sse") as sse, Subscriber(held.url, "ws") as ws:
        trainer.fit(Tiny(), loader(), loader(16))
        assert callback.server is None  # released at teardown
        assert manager.is_server_running()  # our reference keeps it up
        expected = {(run, tag, step, value) for tag, step, value in written_points(trainer.logger.log_dir)}  # type: ignore[union-attr]
        assert len(expected) > 20
        for sub in (sse, ws):
            assert sub.wait_for(lambda s: expected <= set(s.points)), (
                f"{sub.kind} missed {len(expected - set(sub.points))} points"
            )
            got = sorted(p for p in sub.snapshot() if p[0] == run)
            written = sorted((run, tag, step, value) for tag, step, value in written_records(trainer.logger.log_dir))  # type: ignore[union-attr]
            assert got == written, f"{sub.kind}: each record exactly once"
            # "finished" follows the last points (teardown reads them, then publishes it): wait for it too
            assert sub.wait_for(lambda s: {(x["run"], x["state"]) for x in s.statuses} >= lifecycle), (
                f"{sub.kind} statuses: {sub.statuses}"
            )
    manager.release(held)
    assert not manager.is_server_running()


def test_exception_mid_fit_releases_server_and_registry_entry(tmp_path: Path, manager: Any) -> None:
    # no linger: the release itself stops the server; a flusher that has not looked at the writer yet
    # (torch's writes through: after one look it would end on its own)
    callback = StreamCallback(linger_s=0, flush_interval_s=60)
    trainer = make_trainer(tmp_path, callback)
    seen: list[int] = []
    model = Tiny(fail_at_step=5)
    flushers: list[int] = []

    def note(m: Any) -> None:
        seen.append(len(list_servers()))
        flushers.append(len(flusher_threads()))

    model.hook = note
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, loader())
    assert seen
    assert max(seen) == 1
    assert set(flushers) == {1}
    assert flusher_threads() == []  # stopped at on_exception
    assert not manager.is_server_running()
    assert list_servers() == []
    assert callback.server is None


@pytest.mark.parametrize("isolated", [True, False], ids=["server-process", "server-thread"])
def test_failed_run_streams_a_failed_status(tmp_path: Path, manager: Any, isolated: bool) -> None:
    held = manager.acquire(isolated=isolated)
    with Subscriber(held.url, "sse") as sse:
        with pytest.raises(RuntimeError, match="boom"):
            make_trainer(tmp_path, StreamCallback()).fit(Tiny(fail_at_step=3), loader())
        assert sse.wait_for(lambda s: any(st.get("state") == "failed" for st in s.statuses))
        failed = next(st for st in sse.statuses if st.get("state") == "failed")
        assert "boom" in failed["error"]
    manager.release(held)


def test_fit_then_test_and_sequential_trainers_share_the_manager(tmp_path: Path, manager: Any) -> None:
    held = manager.acquire()
    callback = StreamCallback()
    trainer = make_trainer(tmp_path, callback, max_epochs=1)
    trainer.fit(Tiny(), loader())
    trainer.test(Tiny(), loader())
    second = make_trainer(tmp_path, StreamCallback(), max_epochs=1)
    second.fit(Tiny(), loader())
    assert manager.acquire() is held  # the same server all along
    manager.release(held)
    manager.release(held)
    assert not manager.is_server_running()
    assert list_servers() == []


def test_two_trainers_in_two_threads_share_one_server(tmp_path: Path, manager: Any) -> None:
    entries: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=60)

    def train(i: int) -> None:
        try:
            model = Tiny()

            def sync(m: Any) -> None:
                if m.global_step == 1:
                    barrier.wait()  # both runs are inside fit at once
                entries.append(len(list_servers()))

            model.hook = sync
            make_trainer(tmp_path / f"t{i}", StreamCallback(linger_s=0), max_epochs=1).fit(model, loader())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert entries
    assert max(entries) == 1
    assert not manager.is_server_running()


def test_writes_that_bypass_lightning_are_flushed_on_a_short_cadence(tmp_path: Path, manager: Any) -> None:
    held = manager.acquire()
    arrived: list[bool] = []

    with Subscriber(held.url, "sse", tag="direct/*") as sse:

        def check(m: Any) -> None:
            if m.global_step == 20:  # wait (bounded) for an earlier direct write to arrive mid-fit
                arrived.append(sse.wait_for(lambda s: any(p[2] >= 10 for p in s.points), timeout=15))

        model = Tiny(direct_writes=True)
        model.hook = check
        # log_every_n_steps is large: Lightning itself neither logs nor flushes during the epoch
        make_trainer(tmp_path, StreamCallback(flush_interval_s=0.05), max_epochs=3, log_every_n_steps=1000).fit(
            model, DataLoader(loader(256).dataset, batch_size=8)
        )
    assert arrived == [True]
    manager.release(held)


def test_the_flusher_ends_once_it_sees_a_writer_that_writes_each_record_through(tmp_path: Path, manager: Any) -> None:
    # torch's SummaryWriter (Lightning's pick with tensorboard installed) appends each record to a local
    # file as it comes: a flush does nothing there, so the thread ends instead of waking 20 times a second
    held = manager.acquire()
    seen: list[tuple[str, bool]] = []

    with Subscriber(held.url, "sse", tag="direct/*") as sse:

        def check(m: Any) -> None:
            if m.global_step == 2:
                seen.append(("writer", type(m.logger.experiment).__module__.startswith("torch.utils.tensorboard")))
                deadline = time.monotonic() + 15  # a bound, not a timing assertion
                while flusher_threads() and time.monotonic() < deadline:
                    time.sleep(0.01)
                seen.append(("flusher ended mid-fit", not flusher_threads()))
                m.logger.experiment.add_scalar("direct/after", 1.0, 2)  # ...and a direct write still arrives
                seen.append(
                    ("arrived", sse.wait_for(lambda s: ("direct/after", 2) in {(p[1], p[2]) for p in s.points}))
                )

        model = Tiny()
        model.hook = check
        make_trainer(tmp_path, StreamCallback(flush_interval_s=0.05), max_epochs=1, log_every_n_steps=1000).fit(
            model, loader()
        )
    assert seen == [("writer", True), ("flusher ended mid-fit", True), ("arrived", True)]
    manager.release(held)


def test_a_direct_write_reaches_clients_while_the_step_that_wrote_it_still_runs(
    tmp_path: Path, manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tensorboardX's writer, as Lightning picks it when tensorboard is not installed: it holds records
    # in a file buffer until flushed (torch's writes each record through, so it would prove nothing here)
    import lightning.fabric.loggers.tensorboard as fabric_tensorboard

    pytest.importorskip("tensorboardX")
    monkeypatch.setattr(fabric_tensorboard, "_TENSORBOARD_AVAILABLE", False)
    held = manager.acquire()
    arrived: list[bool] = []

    with Subscriber(held.url, "sse", tag="direct/*") as sse:

        def write_then_wait(m: Any) -> None:
            if m.global_step == 3:
                # the last write of a burst, then a long step: no batch-end hook runs meanwhile
                m.logger.experiment.add_scalar("direct/last", 3.0, 3)
                arrived.append(
                    sse.wait_for(lambda s: ("direct/last", 3) in {(p[1], p[2]) for p in s.points}, timeout=20)
                )

        model = Tiny()
        model.hook = write_then_wait
        trainer = make_trainer(tmp_path, StreamCallback(flush_interval_s=0.05), max_epochs=1, log_every_n_steps=1000)
        assert type(trainer.logger.experiment).__module__.startswith("tensorboardX")  # type: ignore[union-attr]
        trainer.fit(model, loader())
    assert arrived == [True]
    assert flusher_threads() == []  # stopped at teardown
    manager.release(held)


@pytest.mark.parametrize("flush_interval_s", [0.1, 0])
def test_lightning_dispatches_no_per_step_hook_the_callback_does_not_use(
    tmp_path: Path, manager: Any, flush_interval_s: float
) -> None:
    # Lightning's profiler records every hook it dispatches to a callback: "[Callback]<state_key>.<hook>"
    profiler = SimpleProfiler()
    trainer = make_trainer(
        tmp_path,
        StreamCallback(flush_interval_s=flush_interval_s, isolated=False, linger_s=0),
        profiler=profiler,
        max_epochs=1,
    )
    trainer.fit(Tiny(), loader(), loader(16))
    trainer.test(Tiny(), loader(16))
    dispatched = {
        name.rpartition(".")[2] for name in profiler.recorded_durations if name.startswith("[Callback]StreamCallback.")
    }
    assert {"setup", "on_train_epoch_end", "teardown"} <= dispatched
    # none per step, flushing or not: the writers are flushed from a thread of the callback's own
    per_step = {"on_train_batch_end", "on_validation_batch_end", "on_test_batch_end"}
    assert per_step <= set(callback_module._UNUSED_STEP_HOOKS)
    assert not dispatched & set(callback_module._UNUSED_STEP_HOOKS)
    assert not manager.is_server_running()


def test_a_subclass_keeps_the_per_step_hooks_it_overrides(tmp_path: Path, manager: Any) -> None:
    calls: list[int] = []

    class Counting(StreamCallback):
        def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
            calls.append(trainer.global_step)

    make_trainer(tmp_path, Counting(isolated=False), max_epochs=1).fit(Tiny(), loader())
    assert calls == list(range(8))  # 64 samples, batches of 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 70000}, "1..65535"),
        ({"host": "0.0.0.0"}, "token"),
        ({"flush_interval_s": -1}, "flush_interval_s"),
        ({"bogus": 1}, "valid options"),
    ],
)
def test_bad_options_fail_in_init_naming_the_argument(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        StreamCallback(**kwargs)


def test_busy_strict_port_does_not_stop_training(
    tmp_path: Path, manager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        trainer = make_trainer(tmp_path, StreamCallback(port=port, strict_port=True), max_epochs=1)
        trainer.fit(Tiny(), loader())
        assert trainer.state.finished
        assert "streaming is off" in caplog.text
    finally:
        holder.close()


def test_ddp_two_cpu_processes_serve_once_and_deliver_every_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).with_name("ddp_run.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DDP-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]

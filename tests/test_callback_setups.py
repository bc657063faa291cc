"""StreamCallback in the setups Lightning users have: both namespaces, no TensorBoard logger, many fits.

Every test runs a real ``Trainer.fit`` on a tiny CPU model and reads what arrived with real clients.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.needs import NO_TORCH_REASON

pytest.importorskip("lightning", reason=NO_TORCH_REASON)

import lightning.pytorch as L
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_stream import StreamCallback, StreamClient, get_stream_server_manager
from lightning_stream import callback as callback_module
from tests.livetools import Subscriber
from tests.proctools import serving
from tests.test_callback import Tiny, loader

pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

QUIET: dict[str, Any] = {
    "accelerator": "cpu",
    "log_every_n_steps": 1,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "enable_progress_bar": False,
}


class PlTiny(pl.LightningModule):
    """The same tiny model, written against the legacy ``pytorch_lightning`` namespace."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture
def manager() -> Any:
    manager = get_stream_server_manager()
    yield manager
    manager.cleanup()


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback warns once per process; every test here starts as a new process would."""
    monkeypatch.setattr(callback_module, "_WARNED", set(), raising=False)


def steps_of(url: str, run: str, tag: str) -> list[int]:
    return [step for step, _, _ in StreamClient(url).scalars(run, tag)]


# ---- 1. the legacy namespace -------------------------------------------------------------------


@pytest.mark.parametrize("logger", ["explicit", "default"])
def test_a_pytorch_lightning_trainer_streams_its_tensorboard_logger(tmp_path: Path, manager: Any, logger: str) -> None:
    callback = StreamCallback(linger_s=0)
    options: dict[str, Any] = {"default_root_dir": str(tmp_path)}
    if logger == "explicit":
        options["logger"] = pl.loggers.TensorBoardLogger(str(tmp_path), name="legacy")
    held = manager.acquire()
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], **options, **QUIET)
    assert type(trainer.logger).__module__.startswith("pytorch_lightning.")
    trainer.fit(PlTiny(), loader())
    assert trainer.state.finished
    run = "legacy/version_0" if logger == "explicit" else "lightning_logs/version_0"
    assert callback.runs == [run]
    assert steps_of(held.url, run, "train/loss") == list(range(8))
    manager.release(held)


def test_pytorch_lightning_alone_is_not_joined_by_a_second_lightning(tmp_path: Path) -> None:
    # A fresh process that imports only pytorch_lightning, as a user following an older tutorial does.
    script = f"""
import sys
import pytorch_lightning as pl, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_stream import StreamCallback, StreamClient

class M(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
    def training_step(self, batch, i):
        loss = nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

x = torch.randn(64, 4)
callback = StreamCallback()
trainer = pl.Trainer(max_epochs=1, default_root_dir={str(tmp_path)!r}, callbacks=[callback],
                     accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)
trainer.fit(M(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8))
assert isinstance(callback, pl.Callback), type(callback).__mro__
points = StreamClient(callback._announced_url).scalars("lightning_logs/version_0", "train/loss")
assert [p[0] for p in points] == list(range(8)), points
loaded = sorted(m for m in sys.modules if m == "lightning" or m.startswith("lightning."))
assert not loaded, loaded
print("PL-ONLY-OK")
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert "PL-ONLY-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_fabric_and_both_pytorch_tensorboard_loggers_are_recognised(tmp_path: Path) -> None:
    from lightning.fabric.loggers import TensorBoardLogger as FabricLogger
    from lightning_fabric.loggers import TensorBoardLogger as LegacyFabricLogger

    for cls in (L.loggers.TensorBoardLogger, pl.loggers.TensorBoardLogger, FabricLogger, LegacyFabricLogger):
        assert callback_module.is_tensorboard_logger(cls(str(tmp_path)))
    assert not callback_module.is_tensorboard_logger(L.loggers.CSVLogger(str(tmp_path)))
    assert not callback_module.is_tensorboard_logger(pl.loggers.CSVLogger(str(tmp_path)))


# ---- 2. never abort training -------------------------------------------------------------------


@pytest.mark.parametrize("namespace", [L, pl], ids=["lightning", "pytorch_lightning"])
@pytest.mark.parametrize("setup", ["csv", "fast_dev_run"])
def test_without_a_tensorboard_logger_the_logged_metrics_are_streamed(
    tmp_path: Path, manager: Any, caplog: pytest.LogCaptureFixture, namespace: Any, setup: str
) -> None:
    held = manager.acquire()
    model = Tiny() if namespace is L else PlTiny()
    if setup == "csv":
        runs, steps = ["csv/version_0", "csv/version_1"], list(range(16))
    else:
        runs, steps = ["fast_dev_run"], [0]
    with Subscriber(held.url, "sse") as sse, caplog.at_level(logging.WARNING, "lightning_stream"):
        for _ in range(2):  # the second fit is not warned again
            options: dict[str, Any] = {"max_epochs": 2, "default_root_dir": str(tmp_path)}
            if setup == "csv":
                options["logger"] = namespace.loggers.CSVLogger(str(tmp_path), name="csv")
            else:
                options["fast_dev_run"] = True
            trainer = namespace.Trainer(callbacks=[StreamCallback()], **options, **QUIET)
            trainer.fit(model, loader())
            assert trainer.state.finished
        expected = {(run, step) for run in runs for step in steps}
        assert sse.wait_for(lambda s: {(r, st) for r, t, st, _ in s.points if t == "train/loss"} >= expected)
        assert sse.wait_for(lambda s: sum(x["state"] == "finished" for x in s.statuses) == 2)
    warnings = [r.getMessage() for r in caplog.records if "no TensorBoardLogger" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "TensorBoardLogger('lightning_logs')" in warnings[0]
    for run in runs:
        assert steps_of(held.url, run, "train/loss") == steps
    if setup == "csv":  # the CSV file is written as before: the tap only listens
        assert (tmp_path / "csv" / "version_1" / "metrics.csv").read_text().count("\n") > len(steps)
    manager.release(held)


def test_with_logging_off_training_goes_on_with_one_warning(
    tmp_path: Path, manager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "lightning_stream"):
        for _ in range(2):
            trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[StreamCallback()], **QUIET)
            trainer.fit(Tiny(), loader())
            assert trainer.state.finished
    warnings = [r.getMessage() for r in caplog.records if "logger=False" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "TensorBoardLogger('lightning_logs')" in warnings[0]
    assert not manager.is_server_running()  # nothing to stream: no server was started


def test_the_metrics_tap_is_removed_after_fit(tmp_path: Path, manager: Any) -> None:
    csv = L.loggers.CSVLogger(str(tmp_path))
    L.Trainer(max_epochs=1, logger=csv, callbacks=[StreamCallback(linger_s=0)], **QUIET).fit(Tiny(), loader())
    assert "log_metrics" not in vars(csv)
    assert not manager.is_server_running()


# ---- 3. one server across fits ------------------------------------------------------------------


def test_the_server_a_callback_launched_outlives_fit_and_the_next_trainer_reuses_its_url(
    tmp_path: Path, manager: Any
) -> None:
    first = StreamCallback()
    L.Trainer(
        max_epochs=1, logger=L.loggers.TensorBoardLogger(str(tmp_path), name="a"), callbacks=[first], **QUIET
    ).fit(Tiny(), loader())
    assert manager.is_server_running()  # the dashboard stays up after fit
    [server] = manager.servers
    url = server.url
    assert steps_of(url, "a/version_0", "train/loss") == list(range(8))
    with Subscriber(url, "sse") as tab:  # the open tab
        second = StreamCallback()
        trainer = L.Trainer(
            max_epochs=1, logger=L.loggers.TensorBoardLogger(str(tmp_path), name="b"), callbacks=[second], **QUIET
        )
        trainer.fit(Tiny(), loader())
        assert second._announced_url == url  # same URL, printed again for this trainer
        assert manager.servers == [server]
        # the new run reaches the open tab live: its status and its points, without a reload
        assert tab.wait_for(
            lambda s: {"started", "finished"} <= {x["state"] for x in s.statuses if x["run"] == "b/version_0"}
        )
        assert tab.wait_for(lambda s: {st for r, _, st, _ in s.points if r == "b/version_0"} >= set(range(8)))
        assert tab.resets == 0
    assert {r["run"] for r in StreamClient(url).runs()} >= {"a/version_0", "b/version_0"}


def test_linger_s_stops_a_launched_server_after_the_last_release(tmp_path: Path, manager: Any) -> None:
    L.Trainer(
        max_epochs=1, logger=L.loggers.TensorBoardLogger(str(tmp_path)), callbacks=[StreamCallback(linger_s=0)], **QUIET
    ).fit(Tiny(), loader())
    assert not manager.is_server_running()


def test_a_server_acquired_explicitly_keeps_plain_reference_counting(tmp_path: Path, manager: Any) -> None:
    held = manager.acquire()
    L.Trainer(
        max_epochs=1, logger=L.loggers.TensorBoardLogger(str(tmp_path)), callbacks=[StreamCallback()], **QUIET
    ).fit(Tiny(), loader())
    assert manager.refcount(held) == 1  # the callback dropped only its own reference
    manager.release(held)
    assert not manager.is_server_running()


def test_show_prefers_this_processs_server_over_a_newer_one_of_another_process(
    tmp_path: Path, manager: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_stream.notebook import show

    L.Trainer(
        max_epochs=1, logger=L.loggers.TensorBoardLogger(str(tmp_path)), callbacks=[StreamCallback()], **QUIET
    ).fit(Tiny(), loader())
    [own] = manager.servers
    with serving(tmp_path) as (_, other_url):  # another process's server, started after ours: the newest one
        capsys.readouterr()
        assert show().src == own.url + "/"
        assert "this process's server" in capsys.readouterr().out
        manager.cleanup()
        assert show().src == other_url + "/"
        assert f"newest live one, {other_url}" in capsys.readouterr().out


# ---- 5. one directory, one run ------------------------------------------------------------------


@pytest.fixture
def magic() -> Any:
    from lightning_stream import notebook

    yield notebook.lightning_stream_magic
    notebook._held.clear()  # the manager fixture stops the servers


def fit_default_logger(root: Path, callback: StreamCallback) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, default_root_dir=str(root), callbacks=[callback], **QUIET)
    trainer.fit(Tiny(), loader())
    return trainer


def one_run_per_directory(url: str) -> dict[str, str]:
    runs = StreamClient(url).runs()
    by_dir = {os.path.realpath(r["logdir"]): r["run"] for r in runs}
    assert len(by_dir) == len(runs), runs  # no directory listed twice
    return by_dir


def test_a_logdir_watched_by_the_magic_and_by_the_callback_is_one_run(
    tmp_path: Path, manager: Any, magic: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "lightning_logs"
    logs.mkdir()
    url = magic(str(logs)).src  # %lightning_stream lightning_logs, then train in the same kernel
    with Subscriber(url, "sse") as tab:
        callback = StreamCallback()
        fit_default_logger(tmp_path, callback)
        assert callback.runs == ["version_0"]  # the name the dashboard shows
        assert callback._announced_url is not None
        assert url.startswith(callback._announced_url)
        assert tab.wait_for(lambda s: "finished" in [x["state"] for x in s.statuses])
        sent = [(t, st) for r, t, st, _ in tab.snapshot() if t == "train/loss"]
        runs = {r for r, _, _, _ in tab.snapshot()} | {x["run"] for x in tab.statuses}
    assert runs == {"version_0"}
    assert sorted(sent) == [("train/loss", step) for step in range(8)]  # each point once
    assert one_run_per_directory(url) == {str((logs / "version_0").resolve()): "version_0"}


def test_a_run_trained_before_the_magic_keeps_its_name_and_is_not_sent_again(
    tmp_path: Path, manager: Any, magic: Any
) -> None:
    first = StreamCallback()
    fit_default_logger(tmp_path, first)  # the callback's server lingers after fit
    url = first._announced_url
    assert url is not None
    with Subscriber(url, "sse") as tab:
        magic(str(tmp_path / "lightning_logs"))  # now watch the whole logdir
        second = StreamCallback()
        fit_default_logger(tmp_path, second)
        assert tab.wait_for(lambda s: "finished" in [x["state"] for x in s.statuses])
        again = [p for p in tab.snapshot() if p[0] == "lightning_logs/version_0"]
    assert again == []  # version_0 was read before: not re-sent under any name
    assert one_run_per_directory(url) == {
        str((tmp_path / "lightning_logs" / "version_0").resolve()): "lightning_logs/version_0",
        str((tmp_path / "lightning_logs" / "version_1").resolve()): second.runs[0],
    }


def test_resuming_into_the_same_version_dir_sends_a_series_reset_before_the_rewritten_steps(
    tmp_path: Path, manager: Any
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    def trainer(**kw: Any) -> L.Trainer:
        options = {**QUIET, "enable_checkpointing": True}
        return L.Trainer(
            max_epochs=2,
            logger=L.loggers.TensorBoardLogger(str(tmp_path), name="tiny", version=0),
            callbacks=[StreamCallback(), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)],
            **options,
            **kw,
        )

    trainer().fit(Tiny(), loader())  # steps 0..15; the server lingers
    [server] = manager.servers
    [first_epoch] = sorted((tmp_path / "ckpt").glob("epoch=0*.ckpt"))
    with Subscriber(server.url, "sse") as sse, Subscriber(server.url, "ws") as ws:
        trainer().fit(Tiny(), loader(), ckpt_path=str(first_epoch))  # epoch 1 again: steps 8..15
        expected = steps_of(server.url, "tiny/version_0", "train/loss")
        assert expected == list(range(16))
        for sub in (sse, ws):
            # a client applying the rule (drop from from_step on a reset, then append) ends where REST is
            assert sub.wait_for(lambda s: replay(list(range(16)), s.log) == expected), (sub.kind, sub.log)
            resets = [(x.get("tag"), x.get("from_step")) for k, x in sub.log if k == "reset"]
            assert ("train/loss", 8) in resets, sub.log


def replay(held: list[int], log: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """The train/loss steps a raw client holds after ``log``, starting from ``held``."""
    for kind, payload in log:
        if kind == "reset" and payload.get("tag") == "train/loss":
            held = [s for s in held if s < payload["from_step"]]
        elif kind == "scalars":
            held = held + [p["step"] for p in payload["points"] if p["tag"] == "train/loss"]
    return held


class WithHparams(Tiny):
    def __init__(self, lr: float = 0.1, hidden: int = 4, optimizer: str = "sgd", nesterov: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()

    def on_train_epoch_end(self) -> None:
        self.log("hp_metric", 0.25)  # a real hp_metric (at a real step) stays a chart


@pytest.mark.parametrize("decoder", ["C", "Python"])
def test_save_hyperparameters_are_in_api_runs_and_the_hp_metric_placeholder_is_not_a_chart(
    tmp_path: Path, manager: Any, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    from lightning_stream import reader

    if decoder == "Python":
        monkeypatch.setattr(reader, "_SPEEDUPS", None)
    elif not reader.has_speedups():
        pytest.skip("the C decoder is not built here")
    held = manager.acquire(isolated=False)  # the reader runs in this process, with the decoder chosen above
    logger = L.loggers.TensorBoardLogger(str(tmp_path), name="hp")
    L.Trainer(max_epochs=2, logger=logger, callbacks=[StreamCallback(isolated=False)], **QUIET).fit(
        WithHparams(lr=0.05), loader()
    )
    [run] = [r for r in StreamClient(held.url).runs() if r["run"] == "hp/version_0"]
    assert run["hparams"] == {"lr": 0.05, "hidden": 4, "optimizer": "sgd", "nesterov": False}
    # Lightning wrote hp_metric=-1 at step 0 as a placeholder for TensorBoard's hparams tab: not a point here
    assert [(s, v) for s, _, v in StreamClient(held.url).scalars("hp/version_0", "hp_metric")] == [
        (7, 0.25),
        (15, 0.25),
    ]
    assert "hp_metric" in run["tags"]
    manager.release(held)


def test_a_run_without_hparams_lists_an_empty_object(tmp_path: Path, manager: Any) -> None:
    held = manager.acquire()
    L.Trainer(
        max_epochs=1,
        logger=L.loggers.TensorBoardLogger(str(tmp_path), name="plain"),
        callbacks=[StreamCallback()],
        **QUIET,
    ).fit(Tiny(), loader())
    [run] = [r for r in StreamClient(held.url).runs() if r["run"] == "plain/version_0"]
    assert run["hparams"] == {}
    assert "hp_metric" not in run["tags"]  # only the placeholder was written: no such chart at all
    manager.release(held)


def test_fabric_with_its_tensorboard_logger_streams_through_the_manager(tmp_path: Path, manager: Any) -> None:
    # The supported way for Fabric (it has no Trainer callbacks): what README "Fabric" shows.
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path / "logs"), name="fabric")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    with manager.acquire() as server:
        if fabric.is_global_zero:
            server.watch(logger.root_dir)  # the whole logdir: every version of every run in it
        with Subscriber(server.url, "sse") as sse:
            for step, (x, y) in enumerate(fabric.setup_dataloaders(loader())):
                loss = nn.functional.mse_loss(model(x), y)
                fabric.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                fabric.log("train/loss", loss.item(), step=step)
                logger.save()  # torch's writer writes each record through: this only waits for its queue
            assert sse.wait_for(lambda s: {st for r, t, st, _ in s.points if t == "train/loss"} == set(range(8)))
            assert {r for r, _, _, _ in sse.points} == {"fabric/version_0"}
    logger.finalize("success")

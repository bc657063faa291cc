"""Remote logdirs through fsspec: ``memory://`` for the reader's cases, a real S3 server (moto) on loopback
for the listing/ranged-read path, the server and a Lightning run writing to ``s3://``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec  # type: ignore[import-untyped]
import portpicker
import pytest

from lightning_stream import StreamServer
from lightning_stream.objectstore import FsspecFileSystem, is_url, open_url
from lightning_stream.scalars import ScalarBatch
from lightning_stream.watcher import LogdirWatcher
from tests.eventfiles import WALL_TIME, f32, write_tensorboard
from tests.livetools import Subscriber

pytestmark = [
    # moto / botocore / s3fs noise under filterwarnings=error
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

Flat = set[tuple[str, str, int, float]]


def flat(batches: list[ScalarBatch]) -> list[tuple[str, str, int, float]]:
    return [(b.run, b.tag, s, v) for b in batches for s, v in zip(b.steps, b.values, strict=True)]


def event_bytes(tmp_path: Path, tag: str, values: list[float]) -> bytes:
    """A real event file (TensorBoard's writer, as torch's ``SummaryWriter`` writes) holding ``values`` at steps 1.."""
    directory = tmp_path / uuid.uuid4().hex
    path = write_tensorboard(directory, [(tag, i + 1, WALL_TIME, v) for i, v in enumerate(values)])
    return path.read_bytes()


def expected(run: str, tag: str, values: list[float], first_step: int = 1) -> list[tuple[str, str, int, float]]:
    return [(run, tag, first_step + i, f32(v)) for i, v in enumerate(values)]


@pytest.fixture
def memroot() -> Iterator[str]:
    """A fresh ``memory://`` prefix (the memory filesystem is process-global)."""
    root = f"memory://ls-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    for leftover in (root, root + "x"):
        if fs.exists(leftover):
            fs.rm(leftover, recursive=True)


def put(url: str, data: bytes) -> None:
    """Write ``url`` whole, as an object store does on every flush."""
    with fsspec.open(url, "wb") as f:
        f.write(data)


# ---- URL handling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "remote"),
    [("s3://bucket/logs", True), ("gs://b", True), ("memory://x", True), ("lightning_logs", False), ("/a/b", False)],
)
def test_is_url_tells_fsspec_urls_from_local_paths(value: str, remote: bool) -> None:
    assert is_url(value) is remote


def test_missing_optional_dependency_names_the_extra_to_install() -> None:
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(ImportError, match=r"gs:// needs gcsfs: pip install 'lightning-stream\[gcs\]'"):
        LogdirWatcher("gs://bucket/logs")


def test_unknown_scheme_fails_naming_the_url() -> None:
    with pytest.raises(ValueError, match="nosuchscheme://x"):
        open_url("nosuchscheme://x/y")


# ---- memory:// : discovery, growth, rewrite, truncation -------------------------------------------


def test_runs_are_named_relative_to_the_url_prefix(memroot: str, tmp_path: Path) -> None:
    put(f"{memroot}/events.out.tfevents.1.host", event_bytes(tmp_path, "root", [1.0]))
    put(f"{memroot}/a/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [1.0, 2.0]))
    put(f"{memroot}/b/c/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [3.0]))
    put(f"{memroot}/b/notes.txt", b"not an event file")
    put(f"{memroot}x/events.out.tfevents.1.host", event_bytes(tmp_path, "sibling", [1.0]))
    watcher = LogdirWatcher(memroot + "/")
    got = sorted(flat(watcher.scan()))
    assert got == sorted(
        expected(".", "root", [1.0]) + expected("a", "loss", [1.0, 2.0]) + expected("b/c", "loss", [3.0])
    )
    assert sorted(watcher.runs()) == [".", "a", "b/c"]
    assert watcher.scan() == []  # nothing new: nothing read twice

    prefixed = LogdirWatcher(memroot, prefix="exp")
    assert {run for run, *_ in flat(prefixed.scan())} == {"exp", "exp/a", "exp/b/c"}


def test_new_runs_and_files_appear_on_the_next_scan(memroot: str, tmp_path: Path) -> None:
    watcher = LogdirWatcher(memroot)  # the prefix does not exist yet: nothing, no error
    assert watcher.scan() == []
    put(f"{memroot}/v0/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [1.0]))
    assert flat(watcher.scan()) == expected("v0", "loss", [1.0])
    put(f"{memroot}/v1/events.out.tfevents.2.host", event_bytes(tmp_path, "loss", [5.0]))
    put(f"{memroot}/v0/events.out.tfevents.3.host", event_bytes(tmp_path, "acc", [0.5]))
    assert sorted(flat(watcher.scan())) == sorted(expected("v0", "acc", [0.5]) + expected("v1", "loss", [5.0]))


def test_growth_by_whole_object_rewrites_reads_each_point_once(memroot: str, tmp_path: Path) -> None:
    full = event_bytes(tmp_path, "loss", [float(i) for i in range(40)])
    url = f"{memroot}/run/events.out.tfevents.1.host"
    watcher = LogdirWatcher(memroot)
    seen: list[tuple[str, str, int, float]] = []
    # Each flush rewrites the object with everything so far; cut points fall mid-record too.
    for cut in (40, 41, len(full) // 3, len(full) // 3 + 7, len(full) // 2, len(full) - 1, len(full)):
        put(url, full[:cut])
        seen.extend(flat(watcher.scan()))
    assert seen == expected("run", "loss", [float(i) for i in range(40)])
    assert watcher.stats["restarts"] == 0


def test_rewrite_with_other_bytes_restarts_the_file(memroot: str, tmp_path: Path) -> None:
    url = f"{memroot}/run/events.out.tfevents.1.host"
    put(url, event_bytes(tmp_path, "loss", [1.0, 2.0]))
    watcher = LogdirWatcher(memroot)
    assert flat(watcher.scan()) == expected("run", "loss", [1.0, 2.0])
    # Same name, longer, but not an extension of what was read (a job restarted from scratch).
    put(url, event_bytes(tmp_path, "loss", [7.0, 8.0, 9.0, 10.0]))
    assert flat(watcher.scan()) == expected("run", "loss", [7.0, 8.0, 9.0, 10.0])
    assert watcher.stats["restarts"] == 1


def test_truncation_restarts_the_file(memroot: str, tmp_path: Path) -> None:
    url = f"{memroot}/run/events.out.tfevents.1.host"
    put(url, event_bytes(tmp_path, "loss", [float(i) for i in range(20)]))
    watcher = LogdirWatcher(memroot)
    assert len(flat(watcher.scan())) == 20
    put(url, event_bytes(tmp_path, "loss", [3.0]))
    assert flat(watcher.scan()) == expected("run", "loss", [3.0])
    assert watcher.stats["restarts"] == 1


def test_a_deleted_object_is_forgotten(memroot: str, tmp_path: Path) -> None:
    url = f"{memroot}/run/events.out.tfevents.1.host"
    put(url, event_bytes(tmp_path, "loss", [1.0]))
    watcher = LogdirWatcher(memroot)
    assert watcher.scan()
    fsspec.filesystem("memory").rm(url)
    assert watcher.scan() == []
    assert watcher.stats["files"] == 0


async def test_watch_polls_a_remote_logdir_without_notifications(memroot: str, tmp_path: Path) -> None:
    import asyncio

    full = event_bytes(tmp_path, "loss", [float(i) for i in range(10)])
    url = f"{memroot}/run/events.out.tfevents.1.host"
    put(url, full[: len(full) // 2])
    watcher = LogdirWatcher(memroot, poll_interval_s=0.2)
    got: list[tuple[str, str, int, float]] = []
    arrived = asyncio.Event()

    def sink(batches: list[ScalarBatch]) -> None:
        got.extend(flat(batches))
        if len(got) == 10:
            arrived.set()

    task = asyncio.create_task(watcher.watch(sink))
    try:
        await asyncio.sleep(0.5)
        put(url, full)
        await asyncio.wait_for(arrived.wait(), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert got == expected("run", "loss", [float(i) for i in range(10)])
    assert not watcher.notifications_active


# ---- a real S3 server on loopback (moto) -------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    port = portpicker.pick_unused_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(_s3_env(endpoint))
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


_S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "S3_ENDPOINT",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def _s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # boto3 / s3fs (what lightning-stream reads with)
        "S3_ENDPOINT": endpoint,  # tensorboard's own S3 writer (what torch's SummaryWriter writes with)
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import boto3  # type: ignore[import-untyped]

    name = f"ls-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    fsspec.filesystem("s3").invalidate_cache()
    return name


def test_s3_logdir_growth_rewrite_and_new_runs_over_a_real_s3_api(bucket: str, tmp_path: Path) -> None:
    s3 = fsspec.filesystem("s3")
    full = event_bytes(tmp_path, "loss", [float(i) for i in range(30)])
    key = f"{bucket}/logs/tiny/version_0/events.out.tfevents.1.host"
    s3.pipe_file(key, full[: len(full) // 2])
    s3.pipe_file(f"{bucket}/logs2/other/events.out.tfevents.1.host", full)  # a sibling prefix: not ours
    watcher = LogdirWatcher(f"s3://{bucket}/logs")
    assert isinstance(watcher._fs, FsspecFileSystem)
    first = flat(watcher.scan())
    assert first
    assert first == expected("tiny/version_0", "loss", [float(i) for i in range(len(first))])
    s3.pipe_file(key, full)  # a flush: the object rewritten with more
    s3.pipe_file(f"{bucket}/logs/tiny/version_1/events.out.tfevents.2.host", event_bytes(tmp_path, "acc", [0.25]))
    second = flat(watcher.scan())
    assert first + [p for p in second if p[0] == "tiny/version_0"] == expected(
        "tiny/version_0", "loss", [float(i) for i in range(30)]
    )
    assert [p for p in second if p[0] == "tiny/version_1"] == expected("tiny/version_1", "acc", [0.25])
    s3.pipe_file(key, event_bytes(tmp_path, "loss", [42.0]))  # truncated: a new job under the same name
    assert flat(watcher.scan()) == expected("tiny/version_0", "loss", [42.0])
    assert watcher.stats["restarts"] == 1
    assert watcher.stats["crc_errors"] == watcher.stats["bad_lengths"] == 0


def test_storage_options_reach_s3fs(bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    s3 = fsspec.filesystem("s3")
    s3.pipe_file(f"{bucket}/run/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [1.0]))
    watcher = LogdirWatcher(
        f"s3://{bucket}", storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}
    )
    assert flat(watcher.scan()) == expected("run", "loss", [1.0])


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_run_logging_to_s3_streams_to_an_sse_client(bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    """A real ``Trainer.fit`` in a child process writes with ``TensorBoardLogger(save_dir="s3://...")`` while
    the server polls the bucket; every point written reaches a real SSE client, each exactly once."""
    logdir = f"s3://{bucket}/logs"
    with StreamServer(port=None, watchdog_interval_s=0, poll_interval_s=0.5) as server:
        server.watch(logdir)
        with Subscriber(server.url, "sse") as sse:
            env = {**os.environ, **_s3_env(s3_endpoint)}
            done = subprocess.run(
                [sys.executable, "-c", _FIT, logdir],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            written: list[tuple[str, int, float]] = [tuple(p) for p in json.loads(done.stdout.strip().splitlines()[-1])]
            run = "tiny/version_0"
            want = sorted((run, tag, step, value) for tag, step, value in written)
            assert len(want) > 20
            assert sse.wait_for(lambda s: set(want) <= set(s.points), timeout=30), (
                f"missing {sorted(set(want) - set(sse.snapshot()))[:5]}"
            )
            assert sorted(p for p in sse.snapshot() if p[0] == run) == want


_FIT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import fsspec, torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Tiny(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

g = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=g)
data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
logger = TensorBoardLogger(save_dir=sys.argv[1], name="tiny", flush_secs=1)
trainer = Trainer(max_epochs=3, accelerator="cpu", logger=logger, log_every_n_steps=1,
                  enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
trainer.fit(Tiny(), data, data)
fs = fsspec.filesystem("s3")
fs.invalidate_cache()
points = []
for path in sorted(p for p in fs.find(logger.log_dir) if "tfevents" in p):
    local = "events.local"
    fs.get_file(path, local)
    for event in EventFileLoader(local).Load():
        for value in event.summary.value:
            points.append((value.tag, event.step, float(tensor_util.make_ndarray(value.tensor).item())))
print(json.dumps(points))
"""


# ---- the command line ------------------------------------------------------------------------------


def test_cli_serve_without_the_extra_exits_2_naming_it() -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    done = subprocess.run(
        [sys.executable, "-m", "lightning_stream", "serve", "gs://bucket/logs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "gs:// needs gcsfs: pip install 'lightning-stream[gcs]'" in done.stderr


def test_cli_serve_s3_url_serves_runs_named_relative_to_the_prefix(
    bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    from lightning_stream.client import StreamClient

    s3 = fsspec.filesystem("s3")
    s3.pipe_file(f"{bucket}/logs/v0/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [1.0, 2.0]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_stream", "serve", "--port", "0", f"s3://{bucket}/logs/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **_s3_env(s3_endpoint)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first line: "serving ... at URL"
        match = re.search(r"serving (\S+) at (http://\S+)", line)
        assert match, (line, proc.poll())
        assert match.group(1) == f"s3://{bucket}/logs/"
        client = StreamClient(match.group(2))
        assert [r["run"] for r in client.runs()] == ["v0"]
        assert [(s, v) for s, _, v in client.scalars("v0", "loss")] == [(1, 1.0), (2, 2.0)]
        s3.pipe_file(f"{bucket}/logs/v1/events.out.tfevents.2.host", event_bytes(tmp_path, "loss", [3.0]))
        deadline = time.monotonic() + 30
        while "v1" not in {r["run"] for r in client.runs()} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(s, v) for s, _, v in client.scalars("v1", "loss")] == [(1, 3.0)]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err


def test_stream_server_watches_and_unwatches_a_memory_url(memroot: str, tmp_path: Path) -> None:
    from lightning_stream.client import StreamClient

    put(f"{memroot}/run/events.out.tfevents.1.host", event_bytes(tmp_path, "loss", [1.0, 2.0]))
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        server.watch(memroot + "/")
        server.watch(memroot)  # the same logdir: idempotent
        assert server.logdirs == [memroot]
        client = StreamClient(server.url)
        assert [(s, v) for s, _, v in client.scalars("run", "loss")] == [(1, 1.0), (2, 2.0)]
        assert server.unwatch(memroot + "/")
        assert server.logdirs == []
        if importlib.util.find_spec("gcsfs") is None:
            with pytest.raises(ImportError, match=r"pip install 'lightning-stream\[gcs\]'"):
                server.watch("gs://bucket/logs")
            assert server.logdirs == []

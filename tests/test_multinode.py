"""Multi-node Lightning: who serves, who can reach it, and that nothing hangs.

The multi-node test runs 2 "nodes" x 2 processes on this machine (CPU, gloo, loopback
only), each node started the way a cluster would start it: the environment Lightning's
``LightningEnvironment`` reads (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``) and
``Trainer(num_nodes=2, devices=2)``. The binding tests only ever send traffic to
127.0.0.1, also for a server bound to all interfaces.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import portpicker
import psutil
import pytest

from tests.needs import NO_TORCH_REASON

pytest.importorskip("lightning", reason=NO_TORCH_REASON)

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_stream import StreamCallback, get_stream_server_manager, list_servers
from lightning_stream.config import is_loopback
from tests.livetools import Subscriber

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

ROOT = Path(__file__).parents[1]
DEADLINE_S = 240.0  # whole multi-node run; typically ~30-60 s on a loaded 2-core box
TOKEN = "multinode-test-token"
LIVE_AT = re.compile(r"lightning-stream: live at (\S+)")
# variables by which Lightning would pick another cluster environment or a rank
_RANK_VARS = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
_CLUSTER_PREFIXES = ("SLURM_", "TORCHELASTIC_", "LSB_", "OMPI_", "PMI_", "PL_")


# -- the multi-node run ----------------------------------------------------------------------------


class Nodes:
    """The two node processes (each its own process group, with its relaunched local rank 1)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.deadline = time.monotonic() + DEADLINE_S
        port = portpicker.pick_unused_port()
        env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS and not k.startswith(_CLUSTER_PREFIXES)}
        env.update(
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        if Path("/sys/class/net/lo").exists():
            env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo would otherwise use the address the hostname resolves to
        self.logs = [tmp / f"node{rank}.log" for rank in (0, 1)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for rank, log in enumerate(self.logs):
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(ROOT / "tests" / "multinode_run.py"), str(tmp)],
                        env={**env, "NODE_RANK": str(rank)},
                        cwd=tmp,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # a process group per node: killable whole, children included
                    )
                )

    def output(self) -> str:
        return "\n".join(
            f"--- node {i} ---\n{log.read_text(errors='replace')[-4000:]}" for i, log in enumerate(self.logs)
        )

    def kill(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def fail(self, message: str) -> None:
        self.kill()
        pytest.fail(f"{message}\n{self.output()}", pytrace=False)

    def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S, detail: Callable[[], str] = str
    ) -> None:
        """Poll until ``predicate()``; fail (killing both nodes) on a timeout or when a node died."""
        deadline = min(self.deadline, time.monotonic() + timeout)
        while not predicate():
            for rank, proc in enumerate(self.procs):
                if proc.poll() not in (None, 0):
                    self.fail(f"node {rank} exited with {proc.returncode} while waiting for {what} {detail()}")
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what} {detail()}")
            time.sleep(0.05)

    def wait_exit(self) -> list[int]:
        self.wait_until(lambda: all(p.poll() is not None for p in self.procs), "both nodes to exit")
        return [p.returncode for p in self.procs]


def written_records(log_dir: Path) -> list[tuple[str, int, float]]:
    """Every scalar record in the event files (with multiplicity), read by TensorBoard's own loader."""
    records = []
    for path in sorted(log_dir.glob("*tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                records.append((value.tag, event.step, float(tensor_util.make_ndarray(value.tensor).item())))
    return records


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 60)
def test_two_nodes_of_two_processes_serve_once_from_global_rank_zero_and_deliver_every_point(
    tmp_path: Path, registry_dir: Path
) -> None:
    nodes = Nodes(tmp_path)
    try:
        ready = tmp_path / "ready.json"
        nodes.wait_until(ready.exists, "global rank 0 to start its server")
        url = json.loads(ready.read_text())["url"]
        entries = list_servers()  # the registry directory all four processes share
        assert [e.url for e in entries] == [url], entries
        with Subscriber(url, "sse") as sse:
            (tmp_path / "subscribed").touch()
            nodes.wait_until((tmp_path / "fit-done").exists, "the fit to end")
            log_dir = tmp_path / "logs" / "mn" / "version_0"
            expected = sorted(("mn/version_0", tag, step, value) for tag, step, value in written_records(log_dir))
            assert len(expected) >= 32, expected  # 2 epochs x 8 steps per rank, loss and epoch
            nodes.wait_until(
                lambda: set(expected) <= set(sse.snapshot()),
                "every written point at the SSE client",
                timeout=60,
                detail=lambda: (
                    f"missing {sorted(set(expected) - set(sse.snapshot()))} resets={sse.resets} "
                    f"errors={sse.errors} (of {len(expected)} written)"
                ),
            )
            assert sorted(sse.snapshot()) == expected, "each written record arrives exactly once"
            nodes.wait_until(  # "finished" follows the last points: it may arrive a moment later
                lambda: {s["state"] for s in sse.statuses if s["run"] == "mn/version_0"} >= {"started", "finished"},
                "the run's started and finished statuses at the SSE client",
                timeout=60,
                detail=lambda: f"statuses {sse.statuses}",
            )
        (tmp_path / "client-done").touch()
        codes = nodes.wait_exit()
        if codes != [0, 0]:
            nodes.fail(f"node exit codes {codes}")
    except BaseException:
        nodes.kill()
        raise

    output = nodes.output()
    reports = {r: json.loads((tmp_path / f"report-rank{r}.json").read_text()) for r in range(4)}
    assert {(r["node_rank"], r["local_rank"], r["world_size"]) for r in reports.values()} == {
        (0, 0, 4),
        (0, 1, 4),
        (1, 0, 4),
        (1, 1, 4),
    }
    for rank, report in reports.items():
        observed = report["observed"]
        assert len(observed) == 16, (rank, observed)
        serving = rank == 0
        assert all(o["manager_running"] is serving for o in observed), (rank, observed)
        assert all(o["callback_serving"] is serving for o in observed), (rank, observed)
        assert all(o["registry"] == [[reports[0]["pid"], url]] for o in observed), (rank, observed)
        assert report["callback_serving_after_fit"] is False
    assert reports[0]["refcount_after_fit"] == 1  # only the test's reference: the callback released its own
    assert reports[0]["running_after_release"] is False
    assert reports[0]["registry_after_release"] == []
    assert [m.group(1).rstrip("/") for m in LIVE_AT.finditer(output)] == [url], output  # printed once, by rank 0
    assert output.count("MN-OK") == 4, output
    assert list_servers() == []
    assert list(registry_dir.glob("*.json")) == []
    deadline = time.monotonic() + 30
    while not all(gone(r["pid"]) for r in reports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(r["pid"]) for r in reports.values()), "a rank outlived its node process"


# -- binding: who can reach the server --------------------------------------------------------------


class Tiny(LightningModule):
    """Runs ``hook(self)`` inside the first training step, while the callback holds the server."""

    def __init__(self, hook: Callable[[Tiny], None]) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.hook = hook
        self.calls = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        if self.calls == 0:
            self.hook(self)
        self.calls += 1
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path: Path, callback: StreamCallback, hook: Callable[[Tiny], None]) -> Tiny:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    model = Tiny(hook)
    Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path / "logs"), name="bind"),
        callbacks=[callback],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    ).fit(model, DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8))
    assert model.calls == 2
    return model


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """Status of ``GET path`` sent to 127.0.0.1:port (never elsewhere), with optional headers (Host too)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def listening_addresses(port: int, pid: int | None = None) -> set[str]:
    """Local addresses process ``pid`` (default: this one) listens on at ``port`` (what the kernel says)."""
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


@contextlib.contextmanager
def announced() -> Iterator[list[str]]:
    """The "live at" lines the callback announces (``rank_zero_info`` on Lightning's own logger)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if LIVE_AT.search(record.getMessage()):
                lines.append(record.getMessage())

    import lightning_utilities.core.rank_zero as rank_zero_module

    target = rank_zero_module.log  # the logger rank_zero_info writes to (Lightning re-points it on import)
    handler, level = Collect(), target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


@pytest.fixture
def manager() -> Iterator[Any]:
    manager = get_stream_server_manager()
    yield manager
    manager.cleanup()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_all_interfaces_bind_without_a_token_fails_in_init_naming_the_token(host: str) -> None:
    with pytest.raises(ValueError, match=r"not loopback.*token=.*LIGHTNING_STREAM_TOKEN"):
        StreamCallback(host=host)


def test_all_interfaces_from_the_environment_without_a_token_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_STREAM_HOST", "0.0.0.0")
    with pytest.raises(ValueError, match="LIGHTNING_STREAM_TOKEN"):
        StreamCallback()
    monkeypatch.setenv("LIGHTNING_STREAM_TOKEN", TOKEN)
    assert StreamCallback().server is None  # now valid; nothing binds before setup


@pytest.mark.slow
def test_all_interfaces_bind_with_a_token_listens_everywhere_and_needs_the_token_on_loopback_too(
    tmp_path: Path, manager: Any
) -> None:
    seen: dict[str, Any] = {}

    callback = StreamCallback(host="0.0.0.0", token=TOKEN, linger_s=0)  # stopped at release: checked below

    def check(model: Tiny) -> None:
        server = callback.server
        assert server is not None
        port = server.port
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        seen["listening"] = listening_addresses(port, server.pid)  # the server process, not this one
        seen["statuses"] = {
            "health": get(port, "/health"),
            "runs": get(port, "/api/runs"),
            "runs wrong token": get(port, "/api/runs", {"Authorization": "Bearer not-the-token"}),
            "runs bearer": get(port, "/api/runs", bearer),
            "runs query": get(port, f"/api/runs?token={TOKEN}"),
            "stream": get(port, "/stream"),
            # what a client on another host sends: the machine's name as Host
            "runs remote Host": get(port, "/api/runs", {**bearer, "Host": f"{socket.gethostname()}:{port}"}),
        }
        seen["registry"] = list_servers()

    with announced() as lines:
        fit(tmp_path, callback, check)
    assert seen["listening"] == {"0.0.0.0"}
    assert seen["statuses"] == {
        "health": 200,
        "runs": 401,
        "runs wrong token": 401,
        "runs bearer": 200,
        "runs query": 200,
        "stream": 401,
        "runs remote Host": 200,
    }
    [entry] = seen["registry"]
    assert entry.host == "0.0.0.0"
    assert entry.token_required
    assert len(lines) == 1
    assert not manager.is_server_running()
    assert list_servers() == []


@pytest.mark.slow
def test_loopback_bind_listens_on_loopback_only_and_refuses_a_foreign_host_header(tmp_path: Path, manager: Any) -> None:
    seen: dict[str, Any] = {}

    callback = StreamCallback()

    def check(model: Tiny) -> None:
        server = callback.server
        assert server is not None
        port = server.port
        seen["url"] = server.url
        seen["listening"] = listening_addresses(port, server.pid)  # the server process, not this one
        seen["statuses"] = {
            "127.0.0.1": get(port, "/api/runs"),
            # an SSH tunnel (ssh -L PORT:127.0.0.1:PORT) arrives with the laptop's Host: localhost:PORT
            "tunnel": get(port, "/api/runs", {"Host": f"localhost:{port}"}),
            "machine name": get(port, "/api/runs", {"Host": f"{socket.gethostname()}.example:{port}"}),
            "rebinding": get(port, "/health", {"Host": f"evil.example:{port}"}),
        }

    with announced() as lines:
        fit(tmp_path, callback, check)
    assert seen["listening"] == {"127.0.0.1"}
    assert seen["statuses"] == {"127.0.0.1": 200, "tunnel": 200, "machine name": 421, "rebinding": 421}
    assert [u.rstrip("/") for line in lines for u in re.findall(r"https?://\S+", line)] == [seen["url"]]  # works here
    assert seen["url"].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_all_interfaces_bind_announces_a_url_another_host_can_use(tmp_path: Path, manager: Any) -> None:
    with announced() as lines:
        fit(tmp_path, StreamCallback(host="0.0.0.0", token=TOKEN), lambda model: None)
    [line] = lines
    hosts = [url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]") for url in re.findall(r"https?://[^\s/]+", line)]
    assert any(h not in ("0.0.0.0", "::", "") and not is_loopback(h) for h in hosts), line


# -- preemption: SIGTERM during fit ----------------------------------------------------------------

SIGTERM_RUN = """
import os, signal, sys
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_stream import StreamCallback

class Model(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does on preemption
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
trainer = Trainer(
    max_epochs=1, accelerator="cpu", logger=TensorBoardLogger(sys.argv[1]), callbacks=[StreamCallback()],
    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
)
try:
    trainer.fit(Model(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))
except BaseException as error:
    print("FIT-RAISED", type(error).__name__, flush=True)
    sys.exit(3)
print("FIT-RETURNED", flush=True)
"""


def run_sigterm_fit(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "sigterm_run.py"
    script.write_text(SIGTERM_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path / "logs")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"a SIGTERM during fit hung the run:\n{error.stdout!r}\n{error.stderr!r}", pytrace=False)


@pytest.mark.slow
def test_sigterm_during_fit_lets_lightning_stop_gracefully_and_the_callback_release(
    tmp_path: Path, registry_dir: Path
) -> None:
    proc = run_sigterm_fit(tmp_path)
    assert "live at" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    # the server's SIGTERM hook defers to Lightning's (chained on top during fit): no death by signal
    assert "FIT-RAISED SIGTERMException" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 3
    assert list(registry_dir.glob("*.json")) == []  # released by the callback's on_exception


# -- teardown: nothing written before the callback lets go is lost ----------------------------------


@pytest.mark.slow
def test_points_flushed_right_before_unwatch_are_not_lost(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from lightning_stream import StreamServer

    lost = []
    for i in range(20):  # without unwatch's final read this lost the point in about every other round
        logdir = tmp_path / f"run{i}"
        writer = SummaryWriter(str(logdir))
        try:
            writer.add_scalar("a", 1.0, 0)
            writer.flush()
            with StreamServer(port=None) as server:
                server.watch(logdir)
                writer.add_scalar("a", 2.0, 1)
                writer.flush()  # what StreamCallback.teardown does right before unwatch()
                server.unwatch(logdir)
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/api/scalars?run=.&tag=a")
                points = json.loads(conn.getresponse().read())["points"]
                conn.close()
                if [p[0] for p in points] != [0, 1]:
                    lost.append((i, points))
        finally:
            writer.close()
    assert lost == []

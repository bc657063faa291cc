"""firstread: the first read of a logdir, started before the server (``lightning-stream serve`` overlaps it
with its imports), is what that server's first watch of the logdir serves, when nothing else is watched there.

The files are removed once the early read is done: points the server then has can only come from that read.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

from lightning_stream import firstread
from lightning_stream.server import StreamServer


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def write_scalars(logdir: Path, tag: str, values: list[float]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for step, value in enumerate(values):
        writer.add_scalar(tag, value, step)
    writer.close()


def runs_of(server: StreamServer) -> dict[str, int | None]:
    return {r["run"]: r["last_step"] for r in get_json(server.url + "/api/runs")}


def test_the_first_watch_serves_the_read_started_before_the_server(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    write_scalars(logdir / "v0", "loss", [3.0, 2.0, 1.0])
    switch = sys.getswitchinterval()
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        firstread.start(logdir, poll_interval_s=server.config.poll_interval_s).result(timeout=30)
        assert sys.getswitchinterval() == switch  # shortened while reading (firstread.SWITCH_INTERVAL_S) only
        shutil.rmtree(logdir / "v0")
        assert server.watch(logdir) == "."
        assert runs_of(server) == {"v0": 2}
        points = get_json(f"{server.url}/api/scalars?run=v0&tag=loss")["points"]
        assert [(p[0], p[2]) for p in points] == [(0, 3.0), (1, 2.0), (2, 1.0)]
        server.unwatch(logdir)
        write_scalars(logdir / "v1", "loss", [5.0])
        server.watch(logdir)  # handed over once: a later watch reads the logdir as it is now
        assert runs_of(server) == {"v0": 2, "v1": 0}


def test_a_read_started_with_another_poll_interval_is_dropped_not_served(tmp_path: Path) -> None:
    write_scalars(tmp_path / "v0", "loss", [3.0])
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        other = server.config.poll_interval_s * 2
        firstread.start(tmp_path, poll_interval_s=other).result(timeout=30)
        shutil.rmtree(tmp_path / "v0")
        server.watch(tmp_path)
        assert runs_of(server) == {}
    assert firstread.take(str(tmp_path), prefix=None, poll_interval_s=other) is None  # forgotten, not kept


def test_an_early_read_of_a_logdir_around_a_watched_one_is_not_served(tmp_path: Path) -> None:
    """The early read also read ``a``, which the server's watch of ``root/a`` reads: one directory, one run."""
    root = tmp_path / "root"
    write_scalars(root / "a", "loss", [1.0, 2.0])
    write_scalars(root / "b", "loss", [1.0])
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        assert server.watch(root / "a") == "."
        firstread.start(root, poll_interval_s=server.config.poll_interval_s).result(timeout=30)
        server.watch(root)
        assert runs_of(server) == {".": 1, "b": 0}

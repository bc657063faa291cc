"""Smoke test of an installed lightning-stream wheel: run by cibuildwheel on each platform (release.yml).

Checks what a user gets from ``pip install lightning-stream``: the C decoder is inside and active, the
``lightning-stream`` command reports the installed version, and a server started from the wheel serves a
logdir (written by TensorBoard's own writer) to a ``StreamClient``. Exits non-zero, saying what is wrong.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

import lightning_stream
from lightning_stream import ServerConfig, StreamClient, StreamServer
from lightning_stream.reader import has_speedups


def main() -> int:
    version = importlib.metadata.version("lightning-stream")
    assert lightning_stream.__version__ == version, (lightning_stream.__version__, version)
    assert has_speedups(), "the wheel has no working C decoder (lightning_stream._speedups): check the build log"
    command = shutil.which("lightning-stream")
    assert command is not None, "the lightning-stream command is not on PATH"
    printed = subprocess.run([command, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert printed == f"lightning-stream {version}", printed

    with tempfile.TemporaryDirectory() as tmp:
        writer = EventFileWriter(str(Path(tmp) / "run"))
        for step in range(3):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
            writer.add_event(
                event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=[value]))
            )
        writer.close()
        with StreamServer(ServerConfig(registry=False)) as server:
            server.watch(tmp)
            points = StreamClient(server.url).scalars("run", "loss")
    assert [step for step, _, _ in points] == [0, 1, 2], points
    print(f"lightning-stream {version} on Python {sys.version.split()[0]}: C decoder, CLI and server OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo that `make demo` runs: a real short training that streams and cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.torch]  # examples/train_with_stream.py trains with Lightning


def run_example(name: str, *args: str) -> str:
    """Run ``examples/NAME`` with ``args``; its output, once it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def test_demo_training_announces_its_url_streams_and_leaves_no_server(tmp_path: Path, registry_dir: Path) -> None:
    logdir = tmp_path / "demo_logs"
    output = run_example(
        "train_with_stream.py", "--epochs", "2", "--samples", "320", "--step-delay", "0", "--logdir", str(logdir)
    )
    assert re.search(r"lightning-stream: live at http://127\.0\.0\.1:\d+ \(runs: tiny/version_0\)", output), output[
        -3000:
    ]
    assert list((logdir / "tiny" / "version_0").glob("*tfevents*"))
    assert not registry_dir.exists() or list(registry_dir.iterdir()) == []  # released at teardown


def test_the_fabric_example_streams_its_loggers_points(tmp_path: Path, registry_dir: Path) -> None:
    output = run_example("fabric_with_stream.py", "--steps", "8", "--root", str(tmp_path))
    assert re.search(r"lightning-stream: live at http://127\.0\.0\.1:\d+ ", output), output[-3000:]
    assert "streamed 8 points of train/loss" in output, output[-3000:]
    assert not registry_dir.exists() or list(registry_dir.iterdir()) == []

"""Ending the subprocesses a test started, whatever state the test left them in."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def end_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Kill ``proc`` if it still runs, reap it, and close its stdout pipe (no ResourceWarning)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def serving(logdir: Path, timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``lightning-stream serve LOGDIR`` in another process: yields it and its URL, stops it after (exit 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_stream", "serve", str(logdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at (http://\S+)", line)
        assert match, line
        yield proc, match.group(1)
        proc.terminate()
        assert proc.wait(timeout) == 0
    finally:
        end_process(proc, timeout)

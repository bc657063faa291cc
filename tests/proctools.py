"""Ending the subprocesses a test started, whatever state the test left them in."""

from __future__ import annotations

import subprocess
from typing import Any


def end_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Kill ``proc`` if it still runs, reap it, and close its stdout pipe (no ResourceWarning)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()

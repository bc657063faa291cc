"""Subprocesses in tests: running a command with its output collected, and ending it whatever state it is in."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


WAIT_S = 30.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, poll_s: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; an AssertionError after ``timeout`` (never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(poll_s)


class Proc:
    """``python -m lightning_stream ARGS`` (or ``command ARGS``) with its output lines collected by threads."""

    def __init__(
        self, *args: str, command: Sequence[str] = (sys.executable, "-m", "lightning_stream"), cwd: Path | None = None
    ) -> None:
        self.popen = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_out(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def check() -> bool:
            found[:] = [m for m in (re.search(pattern, line) for line in list(self.out)) if m]
            if not found and self.popen.poll() is not None:
                time.sleep(0.1)  # let the reader threads drain
                raise AssertionError(f"exited {self.popen.returncode} before {pattern!r}: {self.out} {self.err}")
            return bool(found)

        wait_until(check, timeout)
        return found[0]

    def finish(self, timeout: float = WAIT_S) -> int:
        """Wait for the exit (killing it after ``timeout``) and close the pipes."""
        if self.popen.stdout is None or self.popen.stdout.closed:
            return self.popen.wait()
        try:
            code = self.popen.wait(timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
        for t in self._threads:
            t.join(5)
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self.popen.stdout.close()
        self.popen.stderr.close()
        return code

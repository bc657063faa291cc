"""A stream server in a child process, so serving never takes the training process's GIL.

Why: a server thread inside the training process shares its GIL. On a 1 ms training step,
every file read, hub tick and send to clients is time the step waits for
(``benchmarks/bench_overhead.py``, 10 clients, busy runs read ≤ 80 ms apart: 4.6 % slower with a thread,
1.2–3.2 % from a child; with the longer gap many clients now get, −0.04 % from a child). In a child process the
watcher, hub and sockets run on another core; the training process only writes its event
files, as it does anyway. ``StreamCallback`` uses this by default (``isolated=True``).

``ChildBackend`` is the parent's side: a ``StreamServer`` holding it (``IsolatedStreamServer``:
same API, manager, ref count and registry) runs ``python -m lightning_stream.child`` (``child.py``)
at ``start()`` and talks to it over pipes:

* Commands go as JSON lines, in order, to the child's stdin, written by a writer thread:
  ``publish()``/``publish_status()`` only append to a deque (O(µs)) and never block on the
  pipe; ``watch``/``unwatch``/``restart`` wait for their reply, which comes back in order on
  the child's stdout (the child answers requests only).
* The child ends when its stdin closes. ``stop()`` closes it after everything queued was
  written and waits for the exit, so when it returns the port is free. When the training
  process dies, even by SIGKILL, the pipe closes too: the child stops and removes its
  registry entry, so no orphan server is left behind.
* The child runs in its own session and ignores SIGINT: a Ctrl-C is the training
  process's, whose callback then reports ``failed`` before the server stops.
* A child that dies on its own (a crash, the OOM killer) is started again on the same port
  with the same logdirs, at most ``MAX_RESPAWNS`` times a minute (``watchdog_interval_s=0``
  disables this); points sent with ``publish()`` to the dead child are lost, as on restart.
* The registry entry is the child's: its ``pid`` is the child's.

Why one module of this length: the pipe link (writer and reader threads, in-order answers, the
outbox bound) and the respawn policy are the two halves of one backend.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from lightning_stream.child import config_to_json, error_from, line
from lightning_stream.config import ServerConfig
from lightning_stream.errors import ServerNotRunningError, ServerProcessError
from lightning_stream.logdirs import FINAL_SCAN_TIMEOUT_S
from lightning_stream.registry import remove_entry
from lightning_stream.server import RUNNING, StreamServer
from lightning_stream.threaded import CALL_TIMEOUT_S, START_TIMEOUT_S, STATUS, STOP_TIMEOUT_S
from lightning_stream.threads import start_thread

logger = logging.getLogger(__name__)

OUTBOX_LIMIT = 100_000  # published items queued for a child that does not read; newer ones are dropped
WRITE_BATCH = 4096  # items per write to the child's stdin
MAX_RESPAWNS = 3  # per RESPAWN_WINDOW_S: a child that keeps dying is left dead (and logged)
RESPAWN_WINDOW_S = 60.0
_CLOSE = object()  # outbox marker: close the child's stdin after what is queued before it


class ChildBackend:
    """Serve from a child process (``python -m lightning_stream.child``); see the module docstring.

    Args:
        config: the server's configuration (the child gets it with ``isolated=False``).
        watches: the server's watched logdirs (logdir -> prefix), watched again by a new child.
        lock: the server's lock, taken to replace a child that died on its own.
        running: whether the server is still running (a child stopped on purpose is not replaced).
        restarted: ``restarted(reason)``: count and log a restart made here (a respawn).
    """

    in_process = False  # the child keeps the registry entry and its own supervisor

    def __init__(
        self,
        config: ServerConfig,
        *,
        watches: Callable[[], Mapping[str, str | None]],
        lock: threading.RLock,
        running: Callable[[], bool],
        restarted: Callable[[str], None],
    ) -> None:
        self._config = config
        self._watches = watches
        self._lock = lock
        self._running = running
        self._restarted = restarted
        self._link: _ChildLink | None = None
        self._child: dict[str, Any] = {}  # the child's "ready" answer: pid, port, fallback_message
        self._respawns: collections.deque[float] = collections.deque(maxlen=MAX_RESPAWNS)

    # ---- what the child told us -----------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return int(self._child["port"]) if self._child else None

    @property
    def fallback_message(self) -> str:
        return str(self._child.get("fallback_message", ""))

    @property
    def pid(self) -> int | None:
        """The server process's pid (the one in the registry), while it runs."""
        link = self._link
        return link.pid if link is not None else None

    def alive(self) -> bool:
        link = self._link
        return link is not None and link.alive

    def loop_answers(self, timeout: float) -> bool:
        return self.alive()  # the child's own supervisor watches its loop

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._link, self._child = self._spawn(self._config)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close(timeout)

    def restart(self, *, teardown_timeout: float = STOP_TIMEOUT_S) -> None:
        """Restart serving on the same port: in place when the child lives, else a new child."""
        link = self._link
        if link is not None and link.alive:
            link.request({"op": "restart"})
        else:
            self._respawn()

    # ---- watching and publishing ----------------------------------------------------------------

    def require(self, what: str) -> None:
        link = self._link
        if link is None:
            raise ServerNotRunningError(f"cannot {what}: the server process is being replaced; try again")
        if not link.alive:
            raise ServerNotRunningError(
                f"cannot {what}: the server process (pid {link.pid}) exited with code {link.returncode}; "
                "force_restart() it (the manager does on the next acquire)"
            )

    def watch(self, path: str, prefix: str | None) -> str:
        self.require("watch")
        assert self._link is not None
        name: str = self._link.request({"op": "watch", "logdir": path, "prefix": prefix})
        return name

    def unwatch(self, path: str) -> None:
        link = self._link
        if link is not None and link.alive:
            # bounded like the child's own final read: a stuck child must not hold up a teardown
            link.request({"op": "unwatch", "logdir": path}, timeout=FINAL_SCAN_TIMEOUT_S + STOP_TIMEOUT_S)

    def post(self, item: tuple[Any, ...]) -> None:
        link = self._link
        if link is None:
            raise ServerNotRunningError("cannot publish: the server process is being replaced; try again")
        link.post(item)

    def forget_after_fork(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.abandon()  # so the child sees EOF when the parent exits, whatever this fork does

    # ---- internals (under the server's lock) ----------------------------------------------------

    def _spawn(self, config: ServerConfig) -> tuple[_ChildLink, dict[str, Any]]:
        """A started child and its "ready" answer; the caller makes it current."""
        link = _ChildLink(on_exit=self._child_exited)
        try:
            ready = link.request({"op": "start", "config": config_to_json(config)}, timeout=START_TIMEOUT_S)
        except ServerNotRunningError as error:  # it died or hung before it could answer
            link.close(STOP_TIMEOUT_S)
            raise ServerProcessError(f"the server process did not start: {error}") from error
        except BaseException:
            link.close(STOP_TIMEOUT_S)
            raise
        return link, dict(ready)

    def _respawn(self) -> None:
        old, self._link = self._link, None
        port = self.port
        assert port is not None, "respawn before start"
        if old is not None:
            old.close(STOP_TIMEOUT_S)
        link, ready = self._spawn(self._config.replace(port=port, strict_port=True))
        for path, prefix in list(self._watches().items()):
            try:
                link.request({"op": "watch", "logdir": path, "prefix": prefix})
            except Exception as error:
                logger.warning("lightning-stream: could not watch %s again after a restart: %s", path, error)
        self._link, self._child = link, ready  # current only now, with its logdirs read

    def _child_exited(self, link: _ChildLink) -> None:
        """Reader thread: the child is gone. Start a new one unless we stopped it on purpose."""
        if not self._running() or self._link is not link or self._config.watchdog_interval_s <= 0:
            return
        if link.returncode == -getattr(signal, "SIGTERM", 15):
            return  # stopped on purpose from outside: the manager's next acquire restarts it
        start_thread(
            threading.Thread(target=self._respawn_dead, args=(link,), name="lightning-stream-respawn", daemon=True)
        )

    def _respawn_dead(self, link: _ChildLink) -> None:
        with self._lock:
            if not self._running() or self._link is not link:
                return
            port = self.port
            if link.pid and port:  # a dead child cannot remove its own entry
                remove_entry(link.pid, port)
            now = time.monotonic()
            if len(self._respawns) == MAX_RESPAWNS and now - self._respawns[0] < RESPAWN_WINDOW_S:
                logger.error(
                    "lightning-stream server process (pid %s) exited with code %s, the %d. time within %.0f s; "
                    "not restarting it again (see its errors above; force_restart() to try once more)",
                    link.pid,
                    link.returncode,
                    MAX_RESPAWNS + 1,
                    RESPAWN_WINDOW_S,
                )
                return
            self._respawns.append(now)
            try:
                self._respawn()
            except Exception as error:
                logger.error("lightning-stream could not restart the server process: %s", error)
                return
            self._restarted(f"server process pid {link.pid} exited with code {link.returncode}")


class IsolatedStreamServer(StreamServer):
    """A ``StreamServer`` whose backend is a child process (``ChildBackend``): same API, manager,
    ref count and registry; see the module docstring.

    Raises at ``start()`` what ``StreamServer.start()`` raises in the child
    (``PortInUseError``, ``ServerStartError``), and ``ServerProcessError`` when the child
    itself cannot run (the manager then falls back to a server thread).
    """

    def _make_backend(self) -> ChildBackend:
        return ChildBackend(
            self._config,
            watches=self._watched,
            lock=self._lock,
            running=lambda: self.state == RUNNING,
            restarted=self.count_restart,
        )


@dataclasses.dataclass(frozen=True)
class _Request:
    """A command that waits for the child's answer (in the outbox, between published items)."""

    message: dict[str, Any]
    future: concurrent.futures.Future[Any]


class _ChildLink:
    """One child process and the two threads that talk to it (see the module docstring)."""

    def __init__(self, on_exit: Callable[[_ChildLink], None]) -> None:
        self._on_exit = on_exit
        self._outbox: collections.deque[Any] = collections.deque()
        self._awaiting: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        self._wake = threading.Event()
        self._broken = False
        self._closing = False
        self._dropped = 0
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "lightning_stream.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_env(),
                **_new_session(),
            )
        except OSError as error:
            raise ServerProcessError(f"could not start the server process ({sys.executable}): {error}") from error
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self.pid = self._proc.pid
        self._writer = threading.Thread(target=self._write_loop, name=f"lightning-stream-to-{self.pid}", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"lightning-stream-from-{self.pid}", daemon=True)
        start_thread(self._writer)
        start_thread(self._reader)

    @property
    def alive(self) -> bool:
        return not self._broken and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def post(self, item: tuple[Any, ...]) -> None:
        """Queue a fire-and-forget item (a point or a status); never blocks."""
        if len(self._outbox) >= OUTBOX_LIMIT:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning(
                    "lightning-stream: the server process (pid %d) is not reading; dropping published points",
                    self.pid,
                )
            return
        self._outbox.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def request(self, message: dict[str, Any], *, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Send a command and wait for the child's answer; its error is raised here."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._outbox.append(_Request(message, future))
        self._wake.set()
        if self._broken or self._closing:  # checked after the append: the reader may fail the outbox meanwhile
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(ServerNotRunningError(self._gone_message()))
        try:
            reply = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise ServerNotRunningError(
                f"the server process (pid {self.pid}) did not answer {message['op']!r} within {timeout:.0f} s "
                "(stuck?); force_restart() it, or check /health"
            ) from None
        if "error" in reply:
            raise error_from(reply)
        return reply.get("result")

    def close(self, timeout: float) -> None:
        """Let the child finish what is queued, close its stdin, wait for its exit (kill if late)."""
        self._closing = True
        self._outbox.append(_CLOSE)
        self._wake.set()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "lightning-stream server process (pid %d) did not stop in %.0f s; killing it", self.pid, timeout
            )
            self._proc.kill()
            self._proc.wait()
        self._writer.join(1.0)
        self._reader.join(1.0)

    def abandon(self) -> None:
        """In a fork child: drop our copies of the pipes, touch nothing else."""
        for stream in (self._stdin, self._stdout):
            with contextlib.suppress(OSError, ValueError):
                os.close(stream.fileno())

    def _gone_message(self) -> str:
        code = self._proc.poll()
        how = f"exited with code {code}" if code is not None else "is being stopped"
        return f"the server process (pid {self.pid}) {how}; see its errors above"

    def _write_loop(self) -> None:
        """Writer thread: everything queued goes out in one write, in order."""
        while True:
            self._wake.wait()
            self._wake.clear()
            chunks: list[bytes] = []
            close = False
            while self._outbox and len(chunks) < WRITE_BATCH:
                item = self._outbox.popleft()
                if item is _CLOSE:
                    close = True
                    break
                if isinstance(item, _Request):
                    self._awaiting.append(item.future)  # before the write: the answer may come at once
                    chunks.append(line(item.message))
                elif item[0] is STATUS:
                    chunks.append(line({"op": "status", "run": item[1], "state": item[2], "fields": item[3]}))
                else:
                    chunks.append(line({"op": "publish", "item": list(item)}))
            if self._outbox and not close:
                self._wake.set()  # more than one batch queued: come round again
            try:
                if chunks:
                    self._stdin.write(b"".join(chunks))
                    self._stdin.flush()
                if close:
                    self._stdin.close()
                    return
            except (OSError, ValueError):
                # The child closed its stdin: it is exiting. The reader thread fails what waits at
                # its EOF, once the exit code is known (failing here would race the exit).
                with contextlib.suppress(OSError, ValueError):
                    self._stdin.close()
                return

    def _read_loop(self) -> None:
        """Reader thread: answers, in request order; at EOF the child is gone."""
        with self._stdout:
            for line in self._stdout:
                try:
                    reply = json.loads(line)
                except ValueError:
                    logger.warning("lightning-stream: unreadable answer from the server process: %r", line[:200])
                    continue
                if self._awaiting:
                    future = self._awaiting.popleft()
                    if not future.done():
                        future.set_result(reply)
        self._proc.wait()
        self._fail_waiting()
        if not self._closing:
            logger.warning("lightning-stream server process (pid %d) exited with code %s", self.pid, self._proc.poll())
            self._on_exit(self)

    def _fail_waiting(self) -> None:
        self._broken = True
        error = ServerNotRunningError(self._gone_message())
        while self._awaiting:
            future = self._awaiting.popleft()
            if not future.done():
                future.set_exception(error)
        for item in list(self._outbox):
            if isinstance(item, _Request) and not item.future.done():
                item.future.set_exception(error)


def _child_env() -> dict[str, str]:
    """The parent's environment, with this package importable even from a source checkout."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _new_session() -> dict[str, Any]:
    """Keep terminal signals (Ctrl-C) for the training process; Windows has process groups instead."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined,unused-ignore]
    return {"start_new_session": True}

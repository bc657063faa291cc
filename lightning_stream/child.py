"""The server child process's entry point: ``python -m lightning_stream.child``.

It builds an ordinary (thread-backed) ``StreamServer``, with its own registry entry and
supervisor, and obeys JSON lines on its stdin until EOF; it answers requests (``start``,
``watch``, ``unwatch``, ``restart``) in order on stdout. The parent side is
``isolated.ChildBackend``; this module also holds the pipe's protocol both sides use
(one JSON object per line, the config as JSON, errors rebuilt by name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

from lightning_stream import errors
from lightning_stream.config import ServerConfig
from lightning_stream.errors import ServerStartError
from lightning_stream.server import StreamServer

logger = logging.getLogger(__name__)

REQUESTS = frozenset({"start", "watch", "unwatch", "restart"})


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def config_to_json(config: ServerConfig) -> dict[str, Any]:
    values = dataclasses.asdict(config)
    values["isolated"] = False  # the child serves from its own thread
    return values


def config_from_json(values: dict[str, Any]) -> ServerConfig:
    values["cors_origins"] = tuple(values.get("cors_origins", ()))
    return ServerConfig(**values)


_ERRORS: dict[str, type[Exception]] = {
    "PortInUseError": errors.PortInUseError,
    "ServerStartError": errors.ServerStartError,
    "ServerNotRunningError": errors.ServerNotRunningError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "FileNotFoundError": FileNotFoundError,
    "NotADirectoryError": NotADirectoryError,
    "PermissionError": PermissionError,
}


def error_from(reply: dict[str, Any]) -> Exception:
    """The child's exception, rebuilt in the caller's thread (same type where it is known)."""
    kind, message = str(reply.get("error")), str(reply.get("message", ""))
    if kind == "PortInUseError":
        return errors.PortInUseError(message, port=int(reply.get("port") or 0), owner_pid=reply.get("owner_pid"))
    cls = _ERRORS.get(kind)
    if cls is None:
        return ServerStartError(f"the server process failed: {kind}: {message}")
    return cls(message)


CHILD_NICE = 10


def _yield_cpu_to_training() -> None:
    """Streaming is best effort: when training and serving both want a core, training gets it.

    ``nice`` lowers our share under contention (on Linux also that of our session's autogroup:
    we run in a session of our own, and with autogroup scheduling a plain nice value only
    counts within the session); ``SCHED_BATCH`` stops our frequent short wake-ups (file
    events, ticks, sends) from preempting the training thread. Latency is unaffected while a
    core is idle. Failures are harmless (we just keep the default).
    """
    with contextlib.suppress(OSError, AttributeError):
        os.nice(CHILD_NICE)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(CHILD_NICE))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]


def main() -> int:
    """Serve until stdin closes: one JSON command per line, answers to requests on stdout."""
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _yield_cpu_to_training()
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format=f"lightning-stream server (pid {os.getpid()}): %(message)s")
    server: StreamServer | None = None

    def answer(**fields: Any) -> None:
        answers.write(line(fields))

    for raw in sys.stdin.buffer:
        try:
            message = json.loads(raw)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            logger.error("unreadable command %r; ignored", raw[:200])
            continue
        try:
            if op == "publish":
                assert server is not None
                run, tag, step, wall_time, value = message["item"]
                server.publish(run, tag, step, value, wall_time)
            elif op == "status":
                assert server is not None
                server.publish_status(message["run"], message["state"], **message["fields"])
            elif op == "start":
                server = StreamServer(config_from_json(message["config"])).start()
                answer(result={"pid": os.getpid(), "port": server.port, "fallback_message": server.fallback_message})
            elif op == "watch":
                assert server is not None
                answer(result=server.watch(message["logdir"], prefix=message["prefix"]))
            elif op == "unwatch":
                assert server is not None
                answer(result=server.unwatch(message["logdir"]))
            elif op == "restart":
                assert server is not None
                server.restart()
                answer(result=None)
            else:
                raise ValueError(f"unknown command {op!r}")
        except Exception as error:
            if op not in REQUESTS:
                logger.warning("%s failed: %s", op, error)
                continue
            fields: dict[str, Any] = {"error": type(error).__name__, "message": str(error)}
            if isinstance(error, errors.PortInUseError):
                fields.update(port=error.port, owner_pid=error.owner_pid)
            answer(**fields)  # after a failed start the parent closes stdin: we end below
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

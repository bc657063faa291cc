"""The ``lightning-stream`` command (also ``python -m lightning_stream``).

Sub-commands: ``serve`` (watch logdirs, serve until interrupted), ``ls`` (live
servers from the registry), ``tail`` (live points in the terminal) and
``health`` (an exit status scripts can use). Heavy modules (the server,
aiohttp) are imported inside the command that needs them, so ``--help``
and ``ls`` start in a fraction of a second and never import torch.

Exit status: 0 success, 1 the operation failed (server unreachable or
unhealthy, start failure), 2 bad arguments (one line on stderr).

Why one module of this length: one function per sub-command and the argument parsing they share;
each command reads on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from lightning_stream._version import __version__
from lightning_stream.config import ENV_TOKEN, ServerConfig
from lightning_stream.errors import LightningStreamError
from lightning_stream.filesystem import FileSystem, LocalFileSystem
from lightning_stream.threads import start_thread

if TYPE_CHECKING:
    from lightning_stream.client import StreamPoint
    from lightning_stream.server import StreamServer

__all__ = ["main"]

PROG = "lightning-stream"
COMMANDS = ("serve", "ls", "tail", "health")

_EPILOG_MAIN = f"""\
examples:
  {PROG} serve lightning_logs                 watch a logdir, print the dashboard URL
  {PROG} ls                                   list live servers on this machine
  {PROG} tail lightning_logs --tag 'train/*'  print live points as they arrive
  {PROG} health http://127.0.0.1:6007         exit 0 when the server is healthy

Run '{PROG} COMMAND --help' for the options of one command.
"""

_EPILOG_SERVE = f"""\
examples:
  {PROG} serve lightning_logs
  {PROG} serve runs/a runs/b --port 6007 --strict-port
  (umask 077; python -c 'import secrets; print(secrets.token_urlsafe())' > ~/.lightning-stream-token)
  {PROG} serve lightning_logs --host 0.0.0.0 --token-file ~/.lightning-stream-token

Stops cleanly on Ctrl-C or SIGTERM. Environment: LIGHTNING_STREAM_HOST, LIGHTNING_STREAM_PORT,
LIGHTNING_STREAM_TOKEN give the defaults of --host, --port and --token. Pass the token in
LIGHTNING_STREAM_TOKEN or --token-file (a file of yours, mode 600), not --token: a command line
is visible to every local user (ps, /proc/PID/cmdline).
"""

_EPILOG_LS = f"""\
examples:
  {PROG} ls
  {PROG} ls --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["url"])'
"""

_EPILOG_TAIL = f"""\
examples:
  {PROG} tail http://127.0.0.1:6007
  {PROG} tail lightning_logs --run 'version_*' --tag 'val/*'
  {PROG} tail 6007 --count 10               stop after 10 points

TARGET is a URL, a port on this machine, or a logdir: a logdir uses the server in the
registry that watches it (or a directory above it: then only that run is shown), or starts
a private one for as long as tail runs. Lines starting with '#' are run status changes.
"""

_EPILOG_HEALTH = f"""\
examples:
  {PROG} health http://127.0.0.1:6007 && echo up
  {PROG} health 6007 --timeout 2

Prints the /health JSON and exits 0 when the server answers with status "ok"; exits 1 otherwise.
"""


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2 (argparse prints the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number; use 1..65535, or 0 for a free port") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} is out of range; use 1..65535, or 0 for a free port")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Stream the scalars of TensorBoard logdirs / Lightning runs live over SSE, WebSocket and REST.",
        epilog=_EPILOG_MAIN,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="watch logdirs and serve them until interrupted",
        description="Watch TensorBoard logdirs and serve their scalars (dashboard, REST, SSE, WebSocket).",
        epilog=_EPILOG_SERVE,
        formatter_class=fmt,
    )
    serve.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="TensorBoard log directory to watch")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; off loopback needs --token)")
    serve.add_argument("--port", type=_port, help="port to bind (default: a free one)")
    _add_token_arguments(serve, "bearer token clients must send")
    serve.add_argument("--strict-port", action="store_true", help="fail if --port is busy instead of picking another")
    serve.set_defaults(func=_cmd_serve)

    ls = sub.add_parser(
        "ls",
        help="list live servers from the port registry",
        description="List the live lightning-stream servers of this user (dead entries are pruned).",
        epilog=_EPILOG_LS,
        formatter_class=fmt,
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ls.set_defaults(func=_cmd_ls)

    tail = sub.add_parser(
        "tail",
        help="print live points in the terminal",
        description="Print live points, one line each: time, run, tag, step, value.",
        epilog=_EPILOG_TAIL,
        formatter_class=fmt,
    )
    tail.add_argument("target", metavar="URL|LOGDIR", help="server URL, port, or logdir")
    tail.add_argument("--run", default="*", metavar="GLOB", help="runs to show (default '*')")
    tail.add_argument("--tag", default="*", metavar="GLOB", help="tags to show (default '*')")
    tail.add_argument("--count", "-n", type=_positive_int, metavar="N", help="exit after N points")
    tail.add_argument("--duration", type=_positive_float, metavar="S", help="exit after S seconds")
    tail.add_argument(
        "--retry",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="give up after S seconds of failed reconnects (default 30)",
    )
    _add_token_arguments(tail, "bearer token to send")
    tail.set_defaults(func=_cmd_tail)

    health = sub.add_parser(
        "health",
        help="exit 0 and print the health JSON when the server is healthy",
        description="Check a server: print its /health JSON, exit 0 when healthy and 1 otherwise.",
        epilog=_EPILOG_HEALTH,
        formatter_class=fmt,
    )
    health.add_argument("url", metavar="URL", help="server URL or port on this machine")
    health.add_argument("--timeout", type=_positive_float, default=5.0, metavar="S", help="seconds to wait (default 5)")
    health.set_defaults(func=_cmd_health)
    return parser


def _add_token_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        help=f"{what}; visible to every local user in ps, so prefer ${ENV_TOKEN} (the default) or --token-file",
    )
    tokens.add_argument(
        "--token-file", metavar="PATH", help="read the token from PATH, a file of yours that only you can read (600)"
    )


MAX_TOKEN_FILE_BYTES = 4096


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace stripped), if only this user can read it.

    Raises:
        ValueError: the file cannot be read, is not a regular file, belongs to another
            user, can be read by group or others, or holds no single-line token.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block us
    except OSError as exc:
        raise ValueError(f"cannot read --token-file {path!r}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"--token-file {path!r} is not a regular file; put the token in a file of yours")
        if os.name == "posix" and st.st_uid != os.getuid():
            raise ValueError(f"--token-file {path!r} belongs to uid {st.st_uid}, not to you; use a file of your own")
        if os.name == "posix" and st.st_mode & 0o077:
            raise ValueError(
                f"--token-file {path!r} can be read by others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run 'chmod 600 {path}' (and choose a new token)"
            )
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    token = data.decode("utf-8", errors="replace").strip()
    if not token or len(data) > MAX_TOKEN_FILE_BYTES or any(c.isspace() for c in token):
        raise ValueError(f"--token-file {path!r} must hold one token on one line (e.g. from secrets.token_urlsafe())")
    return token


def _token_of(args: argparse.Namespace, command: str) -> str | None:
    """``--token-file``, else ``--token`` (with a warning: it shows in ps), else None (the environment)."""
    if getattr(args, "token_file", None):
        return read_token_file(args.token_file)
    if args.token is not None:
        print(
            f"{PROG} {command}: warning: --token on the command line is visible to every local user "
            f"(ps, /proc/PID/cmdline); set {ENV_TOKEN} or use --token-file PATH (mode 600) instead",
            file=sys.stderr,
            flush=True,
        )
    return args.token  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also for ``--help`` and bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, bad arguments
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        print(f"{PROG}: error: choose a command: {', '.join(COMMANDS)} (see '{PROG} --help')", file=sys.stderr)
        return 2
    try:
        return func(args)
    except BrokenPipeError:  # `lightning-stream tail ... | head`
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 0
    except LightningStreamError as exc:
        print(f"{PROG}: error: {_cli_words(str(exc))}", file=sys.stderr)
        return 1


def _usage_error(command: str, message: str) -> int:
    print(f"{PROG} {command}: error: {_cli_words(message)} (see '{PROG} {command} --help')", file=sys.stderr)
    return 2


_PYTHON_TO_FLAGS = (
    (re.compile(r"\bstrict_port=True\b|\bstrict_port\b"), "--strict-port"),
    (re.compile(r"\btoken=\.\.\."), "--token TOKEN"),
    (re.compile(r"\bport=None\b"), "--port 0"),
    (re.compile(r"\bport=N\b"), "--port N"),
    (re.compile(r"\bhost='([^']*)'"), r"--host \1"),
)
"""The library's messages name Python arguments (``strict_port=True``); the CLI user typed flags."""


def _cli_words(message: str) -> str:
    """``message`` with the Python arguments it suggests spelled as this command's flags."""
    for pattern, flag in _PYTHON_TO_FLAGS:
        message = pattern.sub(flag, message)
    return message


class _CliWords(logging.Filter):
    """Spells the library's warnings in flags too (e.g. the busy-port fallback, said once, here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _cli_words(record.getMessage()), None
        return True


# ------------------------------------------------------------------- serve


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = ServerConfig.from_env(
            host=args.host, port=args.port or None, token=_token_of(args, "serve"), strict_port=args.strict_port or None
        )
    except (ValueError, TypeError) as exc:
        return _usage_error("serve", str(exc))
    from lightning_stream.objectstore import is_url, open_url

    logdirs: list[str | Path] = []
    for name in args.logdirs:
        if is_url(name):  # s3://bucket/logs etc.: the prefix may not exist until a run writes there
            try:
                open_url(name)
            except (ImportError, ValueError) as exc:
                return _usage_error("serve", str(exc))
            logdirs.append(name)
        elif not Path(name).is_dir():
            return _usage_error("serve", f"LOGDIR {name!r} is not a directory; create it or fix the path")
        else:
            logdirs.append(Path(name))
    from lightning_stream import firstread

    for logdir in logdirs:  # read while the server imports (~0.2 s): its watch takes the points (same process)
        if isinstance(logdir, Path) and not config.isolated:
            firstread.start(logdir, poll_interval_s=config.poll_interval_s)

    from lightning_stream.manager import get_stream_server_manager

    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_CliWords())
    manager = get_stream_server_manager()
    with _stop_on_signals() as stop:  # from the start: a stop during the first read is clean too
        server = manager.acquire_result(config=config).server
        try:  # a busy --port was already reported, once, by the warning of the port fallback
            if _watch_with_progress(server, logdirs, stop):
                where = ", ".join(str(d) for d in logdirs)
                print(f"{PROG}: serving {where} at {server.url}  (Ctrl-C to stop)", flush=True)
                while not stop.wait(0.5):
                    pass
            print(f"{PROG}: stopping", file=sys.stderr, flush=True)
        finally:
            manager.release(server)
    return 0


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; the previous handlers are restored after.

    A second Ctrl-C while stopping raises ``KeyboardInterrupt`` (for the impatient).
    """
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach only the main thread; main() called from a thread stops by KeyboardInterrupt
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _event_files(logdir: str | Path) -> tuple[int, int]:
    """Count and total size of the TensorBoard event files under ``logdir``."""
    fs: FileSystem
    if isinstance(logdir, str):  # a URL: one listing
        from lightning_stream.objectstore import open_url

        fs, root = open_url(logdir)
    else:
        fs, root = LocalFileSystem(), str(logdir)
    stats = [st for st in map(fs.stat, fs.list_event_files(root)) if st is not None]
    return len(stats), sum(st.size for st in stats)


def _watch_with_progress(server: StreamServer, logdirs: list[str | Path], stop: threading.Event) -> bool:
    """Watch each logdir; ``watch()`` returns after the first full read, which for a big
    logdir takes a while, so a terminal shows a live line with the files, bytes and time
    being read meanwhile (the server reports no byte progress, so it counts time, not bytes).
    Plain stderr writes, no progress library: ``rich`` installed beside Lightning would switch
    every user's progress bar to ``RichProgressBar``. False if ``stop`` was set first."""
    live = sys.stderr.isatty()
    for logdir in logdirs:
        files, size = _event_files(logdir)
        what = f"{files} event files, {size / 1e6:.1f} MB"
        started = time.monotonic()

        def draw(what: str = what, logdir: str | Path = logdir, started: float = started) -> None:
            elapsed = time.monotonic() - started
            sys.stderr.write(f"\r\x1b[K{PROG}: reading {what}: {logdir}  {elapsed:.1f} s")
            sys.stderr.flush()

        if live:
            draw()
        ok = _in_thread(functools.partial(server.watch, logdir), stop, tick=draw if live else None)
        if live:
            sys.stderr.write("\r\x1b[K")  # the live line gives way to the result
        if not ok:
            sys.stderr.flush()
            return False
        print(f"{PROG}: read {what} in {time.monotonic() - started:.1f} s: {logdir}", file=sys.stderr, flush=True)
    return True


def _in_thread(func: Callable[[], object], stop: threading.Event, tick: Callable[[], None] | None = None) -> bool:
    """Run ``func`` in a worker thread and wait, so the main thread stays free to redraw the
    progress line (``tick``, every 0.1 s) and to receive signals; the worker's exception is
    re-raised here. False when ``stop`` is set first (the worker is left to finish on its own)."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    start_thread(threading.Thread(target=run, name="lightning-stream-watch", daemon=True))
    while not done.wait(0.1):
        if stop.is_set():
            return False
        if tick is not None:
            tick()
    if failure:
        raise failure[0]
    return True


# ---------------------------------------------------------------------- ls


def _cmd_ls(args: argparse.Namespace) -> int:
    from lightning_stream.registry import list_servers

    servers = list_servers()
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in servers], indent=2))
        return 0
    if not servers:
        print(f"no live lightning-stream servers (start one with '{PROG} serve LOGDIR')")
        return 0
    rows = [("PID", "URL", "STARTED", "LOGDIRS")]
    for info in servers:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started_at))
        lock = " (token)" if info.token_required else ""
        rows.append((str(info.pid), info.url + lock, started, ", ".join(info.logdirs) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return 0


# -------------------------------------------------------------------- tail


def _cmd_tail(args: argparse.Namespace) -> int:
    from lightning_stream.client import StreamClient

    try:
        token = _token_of(args, "tail")  # before a private server starts: a bad file is a usage error
    except ValueError as exc:
        return _usage_error("tail", str(exc))
    target: str = args.target
    private: StreamServer | None = None
    since: int | None = None
    run_prefix: str | None = None
    if target.startswith(("http://", "https://")):
        url = target
    elif target.isdigit():
        url = f"http://127.0.0.1:{target}"
    elif os.path.isdir(target):
        from lightning_stream.registry import find_server_for

        found = find_server_for(target)  # watching it, or a directory above it (then tail shows its runs only)
        if found is not None:
            url, run_prefix = found.info.url, found.run_prefix
            print(f"{PROG}: following {url} (watching {target})", file=sys.stderr, flush=True)
        else:
            private, since = _private_server(target)
            url = private.url
            print(f"{PROG}: started a private server at {url} for {target}", file=sys.stderr, flush=True)
    else:
        return _usage_error("tail", f"{target!r} is neither a URL, a port, nor a directory")
    try:
        client = StreamClient(url, token=token)
    except ValueError as exc:
        return _usage_error("tail", str(exc))
    _log_reconnects()
    try:
        shown = 0
        points = client.stream(
            args.run, args.tag, since=since, duration=args.duration, retry_s=args.retry, on_status=_print_status
        )
        try:
            for point in points:
                if not _in_run(point.run, run_prefix):
                    continue
                print(format_point(point), flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
        finally:
            points.close()
    finally:
        if private is not None:
            private.stop()
    return 0


def _log_reconnects() -> None:
    """Show the client's reconnect messages on stderr, so a silent tail is not a mystery."""
    import logging

    class StderrHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(f"{PROG}: {record.getMessage()}", file=sys.stderr, flush=True)  # sys.stderr as of now

    client_log = logging.getLogger("lightning_stream.client")
    if not any(type(h).__name__ == "StderrHandler" for h in client_log.handlers):
        client_log.addHandler(StderrHandler())
    client_log.setLevel(logging.INFO)


def format_point(point: StreamPoint) -> str:
    """One readable line: local time of the point, run, tag, step and value."""
    stamp = time.strftime("%H:%M:%S", time.localtime(point.wall_time)) + f".{int(point.wall_time % 1 * 1000):03d}"
    return f"{stamp}  {point.run}  {point.tag}  step={point.step}  value={point.value:.6g}"


def _print_status(status: dict[str, Any], out: TextIO | None = None) -> None:
    fields = " ".join(f"{k}={v}" for k, v in status.items() if k not in ("run", "state"))
    print(
        f"# {status.get('run', '?')}: {status.get('state', '?')} {fields}".rstrip(), file=out or sys.stdout, flush=True
    )


def _in_run(run: str, prefix: str | None) -> bool:
    return prefix is None or run == prefix or run.startswith(prefix + "/")


def _private_server(logdir: str) -> tuple[StreamServer, int]:
    """A server for this ``tail`` only (not in the registry, stopped when tail ends), and
    the seq to follow from so that the logdir's history stays out of a live tail.

    ``watch()`` returns once the first read is stored, but those points get their seq
    (and go out to subscribers) a tick later: wait until the seq moves past its start.
    """
    from lightning_stream.client import StreamClient
    from lightning_stream.server import StreamServer

    server = StreamServer(ServerConfig.from_env(registry=False))
    server.start()
    try:
        client = StreamClient(server.url, token=server.config.token)
        start = int(client.health()["seq"])
        server.watch(logdir)
        deadline = time.monotonic() + 10.0
        while True:
            health = client.health()
            seq = int(health["seq"])
            if seq > start or not health.get("events_total") or time.monotonic() > deadline:
                return server, seq
            time.sleep(0.02)
    except BaseException:
        server.stop()
        raise


# ------------------------------------------------------------------ health


def _cmd_health(args: argparse.Namespace) -> int:
    from lightning_stream.client import StreamClient
    from lightning_stream.errors import ClientError

    target: str = args.url
    url = f"http://127.0.0.1:{target}" if target.isdigit() else target
    try:
        client = StreamClient(url, timeout=args.timeout)
    except ValueError as exc:
        return _usage_error("health", str(exc))
    try:
        health = client.health()
    except ClientError as exc:
        print(f"{PROG} health: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(health, indent=2, sort_keys=True))
    if health.get("status") != "ok":
        print(f"{PROG} health: {url} reports status {health.get('status')!r}", file=sys.stderr)
        return 1
    return 0


def _silence_stdout() -> None:
    """After EPIPE, point stdout at devnull so the interpreter's final flush does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

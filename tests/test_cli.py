"""The ``lightning-stream`` command: in-process ``main([...])`` and real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lightning_stream import __version__
from lightning_stream.cli import main
from lightning_stream.client import StreamClient
from lightning_stream.config import ServerConfig
from lightning_stream.errors import ClientError
from lightning_stream.reader import has_speedups
from lightning_stream.registry import list_servers
from lightning_stream.server import StreamServer
from tests.proctools import WAIT_S, Proc, wait_until

COMMANDS = ("serve", "ls", "tail", "health")


@pytest.fixture
def cli() -> Iterator[Callable[..., Proc]]:
    """Start ``python -m lightning_stream ...``; whatever a test leaves running is killed after it."""
    procs: list[Proc] = []

    def start(*args: str) -> Proc:
        procs.append(Proc(*args))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.finish()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    from tensorboardX import SummaryWriter

    root = tmp_path / "logs"
    for run in ("version_0", "version_1"):
        with SummaryWriter(str(root / run)) as writer:
            for step in range(10):
                writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    return root


@pytest.fixture
def server() -> Iterator[StreamServer]:
    with StreamServer(ServerConfig(watchdog_interval_s=0)) as srv:
        yield srv


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------ arguments


def test_help_lists_every_command_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for command in COMMANDS:
        assert f"lightning-stream {command}" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lightning-stream {command}")
    assert f"examples:\n  lightning-stream {command}" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lightning-stream {__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "lightning-stream: error: choose a command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["serve"], "the following arguments are required: LOGDIR"),
        (["serve", ".", "--port", "http"], "port 'http' is not a number"),
        (["serve", ".", "--port", "70000"], "port '70000' is out of range"),
        (["serve", "no/such/dir"], "LOGDIR 'no/such/dir' is not a directory"),
        (
            ["serve", ".", "--host", "0.0.0.0"],
            "pass --token TOKEN (or set LIGHTNING_STREAM_TOKEN), or bind --host 127.0.0.1",
        ),
        (["serve", ".", "--strict-port"], "--strict-port needs a fixed port; pass --port N or drop --strict-port"),
        (["tail", "no/such/thing"], "'no/such/thing' is neither a URL, a port, nor a directory"),
        (["tail", "http://x", "--count", "0"], "'0' must be > 0"),
        (["health"], "the following arguments are required: URL"),
        (["health", "ftp://example.com"], "is not an http(s) URL"),
        (["ls", "--jsn"], "unrecognized arguments: --jsn"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    assert "--help" in captured.err


def test_help_does_not_import_torch_lightning_or_aiohttp() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from lightning_stream.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0\n"
        "heavy = {'torch', 'lightning', 'aiohttp', 'rich', 'tensorboard'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not has_speedups(), reason="the pure-Python reader checks CRCs with the crc32c package")
def test_a_server_reading_a_logdir_imports_neither_crc32c_nor_prometheus_client(logdir: Path) -> None:
    # both cost start-up time (~15 ms, ~10 ms) that `serve` need not pay: the C decoder checks CRCs
    # itself, and /metrics imports prometheus_client at its first scrape
    code = (
        "import sys, json, time, urllib.request\n"
        "from lightning_stream.server import StreamServer\n"
        "from lightning_stream.config import ServerConfig\n"
        "with StreamServer(ServerConfig(port=0, watchdog_interval_s=0)) as server:\n"
        f"    server.watch({str(logdir)!r})\n"
        "    deadline = time.monotonic() + 30\n"
        "    while time.monotonic() < deadline:\n"
        "        runs = json.load(urllib.request.urlopen(server.url + '/api/runs'))\n"
        "        if sum(r['last_step'] == 9 for r in runs) == 2:\n"
        "            break\n"
        "        time.sleep(0.05)\n"
        "    else:\n"
        "        raise SystemExit('the runs were not read')\n"
        "    print(sorted({m.split('.')[0] for m in sys.modules} & {'crc32c', 'prometheus_client'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_stream", "--version"], capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"lightning-stream {__version__}"


# ---------------------------------------------------------------------- serve


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_the_url_serves_the_logdir_and_stops_cleanly(
    cli: Callable[..., Proc], logdir: Path, stop_signal: int
) -> None:
    proc = cli("serve", str(logdir))
    url = proc.wait_out(r"serving .* at (http://\S+)").group(1)
    client = StreamClient(url)
    assert sorted(r["run"] for r in client.runs()) == ["version_0", "version_1"]
    assert [s for s, _, _ in client.scalars("version_0", "train/loss")] == list(range(10))
    (entry,) = list_servers()
    assert entry.url == url
    assert entry.pid == proc.popen.pid
    assert entry.logdirs == (str(logdir),)

    proc.popen.send_signal(stop_signal)
    assert proc.finish() == 0, proc.err
    assert list_servers() == []
    assert port_is_free(entry.port)
    assert not any("Traceback" in line for line in proc.err), proc.err


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_serve_shows_a_progress_display_on_a_terminal_while_reading(logdir: Path) -> None:
    import pty
    import select

    master, slave = pty.openpty()  # rich draws its live display only on a terminal
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_stream", "serve", str(logdir)],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    done = re.compile(r"lightning-stream: read 2 event files, [0-9.]+ MB in [0-9.]+ s: (\S+)")
    screen = ""
    try:
        deadline = time.monotonic() + WAIT_S
        while not done.search(screen) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                raw = os.read(master, 65536).decode("utf-8", "replace")
                screen += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)  # drop colours and cursor moves
    finally:
        proc.terminate()
        assert proc.wait(WAIT_S) == 0
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(master)
    assert "reading 2 event files, 0.0 MB" in screen  # the live line, drawn while reading
    match = done.search(screen)
    assert match is not None, screen
    assert match.group(1) == str(logdir)


def test_serve_on_a_fixed_busy_port_with_strict_port_fails_with_exit_1(cli: Callable[..., Proc], logdir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = cli("serve", str(logdir), "--port", str(port), "--strict-port")
        assert proc.finish() == 1
    assert any(str(port) in line for line in proc.err), proc.err
    assert len(proc.err) == 1, proc.err
    assert "drop --strict-port" in proc.err[0], proc.err  # the CLI's words, not strict_port=True
    assert "strict_port" not in proc.err[0], proc.err


def test_serve_on_a_busy_port_says_so_once_in_flags_and_serves_on_another(
    cli: Callable[..., Proc], logdir: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = cli("serve", str(logdir), "--port", str(port))
        url = proc.wait_out(r"at (http://\S+)").group(1)
        assert not url.endswith(f":{port}")
        proc.popen.terminate()
        assert proc.finish() == 0
    said = [line for line in proc.err if f"port {port}" in line]
    assert len(said) == 1, proc.err
    assert "pass --strict-port to fail instead" in said[0], said


# ------------------------------------------------------------------------- ls


def test_ls_lists_live_servers_as_a_table_and_as_json(
    server: StreamServer, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.watch(logdir)
    assert main(["ls"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["PID", "URL", "STARTED", "LOGDIRS"]
    assert row.split()[:2] == [str(os.getpid()), server.url]
    assert row.endswith(str(logdir))

    assert main(["ls", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["url"] == server.url
    assert entry["logdirs"] == [str(logdir)]


def test_ls_without_servers_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    assert "lightning-stream serve LOGDIR" in capsys.readouterr().out
    assert main(["ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# ----------------------------------------------------------------------- tail


def sse_clients(url: str) -> int:
    return int(StreamClient(url).health()["clients"]["sse"])


def test_tail_prints_one_readable_line_per_live_point(cli: Callable[..., Proc], server: StreamServer) -> None:
    proc = cli("tail", server.url, "--tag", "train/*", "--count", "2")
    wait_until(lambda: sse_clients(server.url) == 1)
    server.publish("run-a", "val/acc", 1, 0.5)  # filtered out
    server.publish("run-a", "train/loss", 7, 0.25)
    server.publish_status("run-a", "finished")
    server.publish("run-a", "train/loss", 8, 0.125)
    assert proc.finish() == 0, proc.err
    points = [line for line in proc.out if not line.startswith("#")]
    assert [line.split()[1:] for line in points] == [
        ["run-a", "train/loss", "step=7", "value=0.25"],
        ["run-a", "train/loss", "step=8", "value=0.125"],
    ]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", points[0].split()[0])
    assert "# run-a: finished" in proc.out


def test_tail_of_a_logdir_follows_the_registry_server_watching_it(
    cli: Callable[..., Proc], server: StreamServer, logdir: Path
) -> None:
    server.watch(logdir)
    proc = cli("tail", str(logdir), "--count", "1")
    wait_until(lambda: sse_clients(server.url) == 1)
    server.publish("version_0", "train/loss", 10, 0.1)
    assert proc.finish() == 0, proc.err
    assert f"lightning-stream: following {server.url} (watching {logdir})" in proc.err
    assert proc.out[0].split()[1:4] == ["version_0", "train/loss", "step=10"]


def test_tail_of_a_run_directory_shows_only_that_run(
    cli: Callable[..., Proc], server: StreamServer, logdir: Path
) -> None:
    server.watch(logdir)
    proc = cli("tail", str(logdir / "version_1"), "--count", "1")
    wait_until(lambda: sse_clients(server.url) == 1)
    server.publish("version_0", "train/loss", 10, 0.1)
    server.publish("version_10", "train/loss", 10, 0.1)
    server.publish("version_1", "train/loss", 10, 0.1)
    assert proc.finish() == 0, proc.err
    assert [line.split()[1:4] for line in proc.out] == [["version_1", "train/loss", "step=10"]]


@pytest.mark.torch
def test_tail_of_a_logdir_without_a_server_starts_a_private_one(cli: Callable[..., Proc], logdir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    proc = cli("tail", str(logdir), "--count", "2")
    wait_until(lambda: any("started a private server" in line for line in proc.err))
    url = re.search(r"at (http://\S+)", proc.err[0]).group(1)  # type: ignore[union-attr]
    assert list_servers() == []  # private: not published in the registry
    wait_until(lambda: sse_clients(url) == 1)
    with SummaryWriter(str(logdir / "version_2")) as writer:
        writer.add_scalar("train/loss", 0.5, 0)
        writer.add_scalar("train/loss", 0.25, 1)
    assert proc.finish() == 0, proc.err
    assert [line.split()[1:4] for line in proc.out] == [
        ["version_2", "train/loss", "step=0"],
        ["version_2", "train/loss", "step=1"],
    ]


def test_tail_reports_reconnects_and_gives_up_when_the_server_is_gone(cli: Callable[..., Proc]) -> None:
    server = StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)).start()
    try:
        proc = cli("tail", server.url, "--retry", "1")
        wait_until(lambda: sse_clients(server.url) == 1)
        server.publish("r", "loss", 1, 1.0)
        proc.wait_out("step=1")
    finally:
        server.stop()
    assert proc.finish() == 1
    assert any("reconnecting" in line for line in proc.err), proc.err
    assert "could not reconnect for 1 s" in proc.err[-1]
    assert "tail --retry" in proc.err[-1]


def test_tail_stops_after_duration(server: StreamServer) -> None:
    assert main(["tail", str(server.port), "--duration", "0.3"]) == 0


def test_tail_of_an_unreachable_url_fails_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    assert main(["tail", f"http://127.0.0.1:{port}"]) == 1
    assert "cannot reach" in capsys.readouterr().err


# --------------------------------------------------------------------- health


def test_health_exits_0_and_prints_the_json_when_healthy(
    server: StreamServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["health", server.url]) == 0
    health = json.loads(capsys.readouterr().out)
    assert health["status"] == "ok"
    assert health["pid"] == os.getpid()
    assert main(["health", str(server.port)]) == 0


def test_health_exits_1_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    assert main(["health", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot reach" in captured.err


def test_health_exits_1_for_a_server_that_is_not_lightning_stream(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("<html>not json</html>")
    http = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert http.stdout is not None
        port = re.search(r"port (\d+)", http.stdout.readline()).group(1)  # type: ignore[union-attr]
        assert main(["health", f"http://127.0.0.1:{port}"]) == 1
    finally:
        http.terminate()
        http.wait(WAIT_S)
        assert http.stdout is not None
        http.stdout.close()


# ---------------------------------------------------------------------- tokens (issue 14)


def _token_file(tmp_path: Path, token: str, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


def test_serve_and_tail_read_the_token_from_a_private_file(
    cli: Callable[..., Proc], logdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "token-from-a-file-123"
    path = _token_file(tmp_path, token)
    proc = cli("serve", str(logdir), "--token-file", str(path))
    url = proc.wait_out(r"serving .* at (http://\S+)").group(1)
    with pytest.raises(ClientError, match="401"):
        StreamClient(url, token="").runs()
    assert len(StreamClient(url, token=token).runs()) == 2
    assert main(["tail", url, "--token-file", str(path), "--duration", "0.3"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert token not in " ".join(proc.popen.args)  # type: ignore[arg-type]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_token_file_others_can_read_is_refused_with_the_chmod_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, "token-from-a-file-123", mode=0o644)
    assert main(["serve", str(tmp_path), "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"chmod 600 {path}" in err


def test_a_token_on_the_command_line_works_with_a_warning_to_use_the_environment_or_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "token-on-the-command-line"
    with StreamServer(ServerConfig(watchdog_interval_s=0, registry=False, token=token)) as srv:
        assert main(["tail", srv.url, "--token", token, "--duration", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "--token on the command line is visible to every local user" in err
    assert "LIGHTNING_STREAM_TOKEN" in err
    assert "--token-file" in err


@pytest.mark.parametrize("command", ["serve", "tail"])
def test_help_recommends_the_environment_or_a_token_file(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--token-file PATH" in out
    assert "visible to every local user in ps" in out

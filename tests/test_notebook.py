"""Notebook helpers: ``show()`` outside a kernel, the magic in-process, and the example
notebook executed by ``nbclient`` in a real ``ipykernel`` running this virtualenv's python."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_stream import notebook
from lightning_stream.client import StreamClient
from lightning_stream.config import ServerConfig
from lightning_stream.errors import ServerNotRunningError
from lightning_stream.manager import get_stream_server_manager
from lightning_stream.notebook import dashboard_url, lightning_stream_magic, show
from lightning_stream.registry import list_servers
from lightning_stream.server import StreamServer
from tests.proctools import serving

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"
WAIT_S = 30.0


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notebook.ENV_PROXY_URL, raising=False)


@pytest.fixture
def magic_servers() -> Iterator[None]:
    """The magic holds its servers for the life of the kernel; here, for the life of the test."""
    yield
    manager = get_stream_server_manager()
    for server in list(notebook._held):
        manager.release(server)
    notebook._held.clear()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    from tensorboardX import SummaryWriter

    root = tmp_path / "logs"
    with SummaryWriter(str(root / "version_0")) as writer:
        for step in range(5):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    return root


# ----------------------------------------------------------------------- show()


def test_show_returns_an_iframe_of_the_newest_live_registry_server() -> None:
    with StreamServer(ServerConfig(watchdog_interval_s=0)) as older:
        time.sleep(0.01)  # distinct started_at
        with StreamServer(ServerConfig(watchdog_interval_s=0)) as newer:
            frame = show(height=450)
            assert frame.src == newer.url + "/"
            assert frame.height == 450
            assert frame.width == "100%"
            assert 'src="' + newer.url + '/"' in frame._repr_html_()
        assert show().src == older.url + "/"


def test_show_accepts_a_server_a_url_a_port_and_a_registry_entry() -> None:
    with StreamServer(ServerConfig(watchdog_interval_s=0)) as server:
        expected = f"http://127.0.0.1:{server.port}/"
        assert show(server).src == expected
        assert show(server.port).src == expected
        assert show(str(server.port)).src == expected
        assert show(list_servers()[0]).src == expected
    assert show("https://example.org/dash/").src == "https://example.org/dash/"


def test_show_puts_known_ports_through_the_proxy_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(notebook.ENV_PROXY_URL, "https://hub.example/user/me/proxy/%PORT%/")
    assert show(6123).src == "https://hub.example/user/me/proxy/6123/"
    assert show("http://127.0.0.1:6123/").src == "http://127.0.0.1:6123/"  # an explicit URL is used as given


def test_show_of_a_token_server_passes_the_token_for_the_browser() -> None:
    with StreamServer(ServerConfig(watchdog_interval_s=0, registry=False, token="notebook-token-1")) as server:
        url = show(server).src
        assert url == f"{server.url}/?token=notebook-token-1"
        assert StreamClient(url.split("?")[0], token="notebook-token-1").runs() == []


def test_show_without_a_live_server_says_how_to_start_one() -> None:
    with pytest.raises(ServerNotRunningError, match="%lightning_stream LOGDIR.*lightning-stream serve LOGDIR"):
        show()


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"server_or_url": 70000}, ValueError, "out of range"),
        ({"server_or_url": "dashboard"}, ValueError, "not a URL"),
        ({"server_or_url": 6007, "height": 0}, ValueError, "height=0"),
        ({"server_or_url": 6.5}, TypeError, "pass a StreamServer"),
        ({"server_or_url": True}, TypeError, "pass a StreamServer"),
    ],
)
def test_show_rejects_bad_arguments_with_a_fix(args: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        show(**args)


# ------------------------------------------------------------------------ magic


def test_magic_starts_a_server_then_reuses_it(
    logdir: Path, magic_servers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = lightning_stream_magic(f"{logdir} --height 300")
    first = capsys.readouterr().out
    assert first.startswith("launched lightning-stream server at http://127.0.0.1:")
    (server,) = get_stream_server_manager().servers
    assert frame.src == server.url + "/"
    assert frame.height == 300
    assert StreamClient(server.url).runs()[0]["run"] == "version_0"

    assert server.pid != os.getpid()  # served from a child process: training in the kernel keeps its GIL
    lightning_stream_magic(str(logdir))
    assert capsys.readouterr().out == f"reusing server on port {server.port} (pid {server.pid})\n"
    assert get_stream_server_manager().refcount(server) == 1  # not one more per run of the magic


def test_magic_reuses_another_process_server_watching_the_logdir(
    logdir: Path, magic_servers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(logdir) as (serve, url):
        frame = lightning_stream_magic(str(logdir))
        port = int(url.rsplit(":", 1)[1])
        assert capsys.readouterr().out == f"reusing server on port {port} (pid {serve.pid})\n"
        assert frame.src == url + "/"
        assert get_stream_server_manager().servers == []  # nothing started here


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("", "the following arguments are required: logdir"),
        ("no/such/dir", "LOGDIR 'no/such/dir' is not a directory"),
        (". --port 0", "--port 0 is out of range"),
        (". --port abc", "invalid int value"),
    ],
)
def test_magic_usage_errors_say_what_to_fix(line: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lightning_stream_magic(line)


def test_dashboard_url_of_an_explicit_port_ignores_the_registry() -> None:
    assert dashboard_url(6007) == "http://127.0.0.1:6007/"


# ------------------------------------------------------- the example, in a kernel


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs *this* interpreter, whatever ``python3`` kernels exist elsewhere."""
    spec = tmp_path / "jupyter" / "kernels" / "lightning-stream-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return "lightning-stream-test"


@pytest.mark.slow
def test_example_notebook_runs_in_a_real_kernel_and_its_dashboard_answers(kernel_name: str, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLE, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    frames: list[str] = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            for output in cell.get("outputs", []):
                html = output.get("data", {}).get("text/html", "")
                frames += re.findall(r'<iframe[^>]*src="([^"]+)"', html)
        # While the kernel (and so its server) is alive, the frames' URL serves the dashboard.
        assert frames
        assert len(set(frames)) == 1
        health = StreamClient(frames[0]).health()
        assert health["status"] == "ok"
        assert health["runs"] == 3  # version_0, version_1, and the run published from the notebook

    text = {i: "".join(o.get("text", "") for o in c.get("outputs", [])) for i, c in enumerate(nb.cells)}
    launched = next(t for t in text.values() if "launched lightning-stream server" in t)
    port = re.search(r"127\.0\.0\.1:(\d+)", launched).group(1)  # type: ignore[union-attr]
    assert any(re.fullmatch(rf"reusing server on port {port} \(pid \d+\)\n", t) for t in text.values()), text
    assert any("['version_0', 'version_1']" in t for t in text.values()), text
    assert any(t.splitlines() == [f"notebook demo/square {s} {float(s * s)}" for s in range(3)] for t in text.values())
    assert len(frames) == 3  # two magics and show()

"""Being installed changes nothing on the host: no rich (Lightning's progress bar), no torch for the CLI.

The CLI and client are run in processes where ``torch``, ``lightning``, ``pytorch_lightning`` and
``rich`` cannot be imported (``sys.modules[name] = None`` makes ``import name`` raise ImportError,
exactly as when the package is not installed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from tensorboardX import SummaryWriter

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ABSENT = ("torch", "lightning", "pytorch_lightning", "rich")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({ABSENT!r}))"
"""Prepended to a child's code: these packages then behave as not installed."""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_installing_the_package_pulls_neither_torch_nor_lightning_nor_rich() -> None:
    declared = requires("lightning-stream") or []
    always = _names([r for r in declared if "extra ==" not in r])
    assert not always & {"torch", "lightning", "pytorch-lightning", "rich"}, sorted(always)
    # `pip install lightning-stream[lightning]` is the way to get the callback's dependencies
    assert _names([r for r in declared if 'extra == "lightning"' in r]) == {"lightning", "torch"}


@pytest.mark.torch
def test_pytorch_lightning_is_the_same_release_as_lightning() -> None:
    assert version("pytorch-lightning") == version("lightning")


def _child(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", f"{BLOCK}\n{code}", *args],
        env=env,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_serve_tail_ls_health_and_the_client_need_neither_torch_nor_lightning_nor_rich(tmp_path: Path) -> None:
    import pty
    import select

    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(5):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.close()

    master, slave = pty.openpty()  # a terminal: the live progress line is drawn too
    serve = _child(
        "from lightning_stream.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
        str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        match = re.search(r"at (http://\S+)", line)
        assert match, line
        url = match.group(1)
        client = _child(
            f"""
from lightning_stream import StreamClient
from lightning_stream.cli import main
for argv in (["ls"], ["health", {url!r}]):
    assert main(argv) == 0, argv
points = StreamClient({url!r}).scalars("run", "loss")
assert [p[0] for p in points] == [0, 1, 2, 3, 4], points
print("TAIL-START", flush=True)
assert main(["tail", {url!r}, "--count", "3"]) == 0
print("NO-TORCH-OK")
""",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdout is not None
        before = [client.stdout.readline()]
        while before[-1] and before[-1].strip() != "TAIL-START":  # ls and health print first
            before.append(client.stdout.readline())
        assert before[-1].strip() == "TAIL-START", before
        live = SummaryWriter(str(tmp_path / "run"))
        step = 5
        while client.poll() is None and step < 500:  # tail prints live points: feed it until it has 3
            live.add_scalar("loss", 0.1, step)
            live.flush()
            step += 1
            select.select([client.stdout], [], [], 0.1)
        live.close()
        out, err = client.communicate(timeout=60)
        assert "NO-TORCH-OK" in out, out + err
    finally:
        serve.terminate()
        assert serve.wait(30) == 0
        screen = ""
        while select.select([master], [], [], 0.2)[0]:
            try:
                screen += os.read(master, 65536).decode("utf-8", "replace")
            except OSError:
                break
        os.close(master)
        if serve.stdout is not None:
            serve.stdout.close()
    assert "read 1 event files" in screen, screen
    assert "Traceback" not in screen, screen

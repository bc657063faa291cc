"""The built sdist and wheel, installed into fresh venvs and run as a user runs them.

``nox -s artifacts`` (run by ``make test``) builds the files and points ``LIGHTNING_STREAM_DIST`` at them:
``raw/`` holds what ``python -m build`` made, ``repaired/`` the wheel after ``auditwheel repair``. Without it
these tests skip. Each venv holds only the package under test; the dependencies are borrowed from the
running interpreter's site-packages through a ``.pth`` file, so nothing is downloaded again and the package
cannot come from anywhere but the file under test (the checkout is never on the venv's path).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.eventfiles import write_tensorboard
from tests.proctools import WAIT_S, Proc

ROOT = Path(__file__).parent.parent
DIST = os.environ.get("LIGHTNING_STREAM_DIST")
pytestmark = pytest.mark.skipif(
    not DIST, reason="needs the built sdist and wheel: run 'nox -s artifacts' (make test does)"
)

NOTICE = "C decoder of lightning-stream"
POINTS = [[0, 1.0], [1, 0.5], [2, 0.25], [3, 0.125]]  # (step, value); exact in float32

READ = """
import importlib.metadata, json, sys
import lightning_stream
from lightning_stream import StreamClient
from lightning_stream.reader import has_speedups

client = StreamClient(sys.argv[1])
print(json.dumps({
    "file": lightning_stream.__file__,
    "version": importlib.metadata.version("lightning-stream"),
    "speedups": has_speedups(),
    "runs": [r["run"] for r in client.runs()],
    "points": client.scalars("run", "loss"),
}))
"""


def only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    write_tensorboard(root / "run", [("loss", step, 1_700_000_000.0 + step, value) for step, value in POINTS])
    return root


def fresh_venv(path: Path, artifact: Path, env: dict[str, str] | None = None) -> Path:
    """A venv at ``path`` with ``artifact`` installed and nothing else of its own; returns its bin directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=WAIT_S)
    bin_dir = path / ("Scripts" if sys.platform == "win32" else "bin")
    python = bin_dir / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(artifact)]
    subprocess.run(pip, check=True, timeout=300, env={**os.environ, **(env or {})})
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    ).stdout.strip()
    borrowed = sysconfig.get_paths()["purelib"]
    assert not (Path(borrowed) / "lightning_stream").exists(), f"{borrowed} must not hold the package under test"
    (Path(site) / "_borrowed_dependencies.pth").write_text(borrowed + "\n")
    return bin_dir


def serve_and_read(bin_dir: Path, logdir: Path, cwd: Path) -> tuple[dict[str, object], list[str]]:
    """``lightning-stream serve LOGDIR`` from the venv, read by a ``StreamClient`` of the venv; (what it read, stderr).

    Both run in ``cwd``, not in the checkout, whose ``lightning_stream/`` would shadow the installed package.
    """
    proc = Proc("serve", str(logdir), command=[str(bin_dir / "lightning-stream")], cwd=cwd)
    try:
        url = proc.wait_out(r"serving .* at (http://\S+)").group(1)
        read = subprocess.run(
            [bin_dir / "python", "-c", READ, url], capture_output=True, text=True, timeout=WAIT_S, cwd=cwd
        )
        assert read.returncode == 0, read.stderr
        proc.popen.send_signal(signal.SIGINT)
        assert proc.finish() == 0, proc.err
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.finish()
    return json.loads(read.stdout), proc.err


def test_build_gives_an_sdist_with_the_c_source_and_a_manylinux_wheel_with_the_c_decoder() -> None:
    assert DIST is not None
    sdist = only(Path(DIST) / "raw", "*.tar.gz")
    wheel = only(Path(DIST) / "repaired", "*.whl")
    assert re.fullmatch(
        r"lightning_stream-[\w.]+-cp3\d+-cp3\d+-manylinux\w*_x86_64(\.manylinux\w*)*\.whl", wheel.name
    ), wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.fullmatch(r"lightning_stream/_speedups\.cpython-3\d+-x86_64-linux-gnu\.so", n) for n in names), names
    assert {"lightning_stream/py.typed", "lightning_stream/_speedups.pyi", "lightning_stream/static/index.html"} <= set(
        names
    )
    import tarfile

    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"setup.py", "pyproject.toml", "lightning_stream/_speedups.c", "lightning_stream/_version.py"} <= members


def test_installed_wheel_serves_a_logdir_to_a_client_with_the_c_decoder(tmp_path: Path, logdir: Path) -> None:
    assert DIST is not None
    wheel = only(Path(DIST) / "repaired", "*.whl")
    wheel_version = wheel.name.split("-")[1]
    bin_dir = fresh_venv(tmp_path / "venv", wheel)

    version = subprocess.run(
        [bin_dir / "lightning-stream", "--version"], capture_output=True, text=True, timeout=WAIT_S, cwd=tmp_path
    )
    assert version.stdout.strip() == f"lightning-stream {wheel_version}"

    read, err = serve_and_read(bin_dir, logdir, tmp_path)
    assert str(read["file"]).startswith(str(tmp_path / "venv")), read["file"]
    assert read["version"] == wheel_version
    assert read["speedups"] is True
    assert read["runs"] == ["run"]
    assert [[step, value] for step, _, value in read["points"]] == POINTS  # type: ignore[attr-defined]
    assert not [line for line in err if NOTICE in line], err

    # The check release.yml runs on every platform's wheels (cibuildwheel's test command), run here on ours.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    check = subprocess.run(
        [bin_dir / "python", ROOT / "scripts" / "check_wheel.py"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=tmp_path,
        env=env,
    )
    assert check.returncode == 0, check.stderr
    assert "C decoder, CLI and server OK" in check.stdout


def test_sdist_built_without_a_compiler_falls_back_to_pure_python_with_one_notice(tmp_path: Path, logdir: Path) -> None:
    assert DIST is not None
    sdist = only(Path(DIST) / "raw", "*.tar.gz")
    bin_dir = fresh_venv(tmp_path / "venv", sdist, env={"CC": str(tmp_path / "no-such-compiler")})

    read, err = serve_and_read(bin_dir, logdir, tmp_path)
    assert str(read["file"]).startswith(str(tmp_path / "venv")), read["file"]
    assert read["speedups"] is False
    assert [[step, value] for step, _, value in read["points"]] == POINTS  # type: ignore[attr-defined]
    notices = [line for line in err if NOTICE in line]
    assert len(notices) == 1, err
    assert "pip install --force-reinstall --no-binary lightning-stream lightning-stream" in notices[0]

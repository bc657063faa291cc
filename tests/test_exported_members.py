"""The public surface: `__all__` matches SPEC.md, every name resolves, imports stay light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_stream

SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"


def spec_python_names() -> set[str]:
    """Top-level names from SPEC's "Python API" table (first backticked identifier of each row)."""
    text = SPEC.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in section.splitlines():
        match = re.match(r"\|\s*`([A-Za-z_][A-Za-z_0-9.]*)", row)
        if match:
            names.add(match.group(1).split(".")[0])
    return names - {"lightning_stream"} | {"notebook"}


@pytest.mark.skipif(not SPEC.exists(), reason="shared/SPEC.md is not beside this checkout")
def test_all_covers_every_name_in_spec() -> None:
    missing = spec_python_names() - set(lightning_stream.__all__)
    assert not missing, f"SPEC names missing from __all__: {sorted(missing)}"


@pytest.mark.torch  # StreamCallback's module imports Lightning
def test_all_is_sorted_and_every_name_resolves() -> None:
    assert lightning_stream.__all__ == sorted(lightning_stream.__all__)
    for name in lightning_stream.__all__:
        assert getattr(lightning_stream, name) is not None, name


def test_all_lists_exactly_the_lazy_exports() -> None:
    lazy = set(lightning_stream._EXPORTS) | {"__version__", "load_ipython_extension", "notebook"}
    assert set(lightning_stream.__all__) == lazy


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = lightning_stream.nope  # type: ignore[attr-defined]


def test_import_does_not_pull_torch_lightning_or_aiohttp() -> None:
    code = (
        "import sys, lightning_stream, lightning_stream.client, lightning_stream.cli, lightning_stream.notebook;"
        "heavy = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing lightning_stream pulled in: {out}"

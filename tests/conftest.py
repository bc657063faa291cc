"""Shared fixtures. Keep this file small: per-module fixtures live in the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.needs import ENV_REQUIRE, HAS_TORCH, NO_TORCH_REASON, torch_required


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``torch`` skip, saying why, where torch or Lightning is not installed (tests/needs.py)."""
    if HAS_TORCH:
        return
    if torch_required():
        raise pytest.UsageError(f"{ENV_REQUIRE} is set but torch or Lightning is missing: {NO_TORCH_REASON}")
    skip = pytest.mark.skip(reason=NO_TORCH_REASON)
    for item in items:
        if item.get_closest_marker("torch") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def registry_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own port registry, so tests never see each other's servers."""
    path = tmp_path_factory.mktemp("registry")
    monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(path / "servers"))
    for name in ("LIGHTNING_STREAM_HOST", "LIGHTNING_STREAM_PORT", "LIGHTNING_STREAM_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path / "servers"

"""Shared fixtures. Keep this file small: per-module fixtures live in the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def registry_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own port registry, so tests never see each other's servers."""
    path = tmp_path_factory.mktemp("registry")
    monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(path / "servers"))
    for name in ("LIGHTNING_STREAM_HOST", "LIGHTNING_STREAM_PORT", "LIGHTNING_STREAM_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path / "servers"

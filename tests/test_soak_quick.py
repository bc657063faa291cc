"""The soak benchmark stays runnable, and its exactly-once checker does catch what it claims to."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "soak.py"


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


def _client(soak: ModuleType, run: str = "*", tag: str = "*") -> Any:
    return soak.Client("c", "http://127.0.0.1:1", "sse", "steady", run, tag, random.Random(0), asyncio.Event())


def _scalars(*points: tuple[str, str, int, float]) -> dict[str, object]:
    return {"points": [{"run": r, "tag": t, "step": s, "wall_time": 0.0, "value": v} for r, t, s, v in points]}


def test_checker_flags_a_duplicate_point_in_an_append_only_run() -> None:
    soak = _soak()
    client = _client(soak)
    client.last_seq = 10
    client.handle("scalars", 11, _scalars(("clean_0", "loss", 1, 1.0), ("clean_0", "loss", 2, 2.0)))
    client.handle("scalars", 12, _scalars(("clean_0", "loss", 2, 2.0)))
    assert any("duplicate" in v for v in client.violations)


def test_checker_flags_a_seq_gap_without_reset_but_not_after_one() -> None:
    soak = _soak()
    client = _client(soak)
    client.last_seq = 10
    client.handle("scalars", 12, _scalars(("clean_0", "loss", 1, 1.0)))
    assert [v for v in client.violations if v.startswith("gap")]
    ok = _client(soak)
    ok.last_seq = 10
    assert ok.handle("reset", 20, {"seq": 20, "reason": "fell more than 256 messages behind"})
    ok.handle("scalars", 21, _scalars(("clean_0", "loss", 1, 1.0)))
    assert ok.violations == []
    assert ok.counts["reset_behind"] == 1


def test_checker_skips_stream_points_already_in_the_rest_snapshot() -> None:
    soak = _soak()
    client = _client(soak)
    client.views[("clean_0", "loss")] = view = soak.View()
    view.snapshot([[0, 0.0, 0.0], [1, 0.0, 1.0]], 15)
    client.last_seq = 14
    client.handle("scalars", 15, _scalars(("clean_0", "loss", 1, 1.0)))  # seq <= REST seq: overlap
    client.handle("scalars", 16, _scalars(("clean_0", "loss", 2, 2.0)))
    assert client.violations == []
    assert (client.counts["overlap"], client.counts["delivered"]) == (1, 1)
    assert list(view.steps) == [0, 1, 2]


def test_verify_reports_missing_and_wrong_points_and_too_many_rewinds() -> None:
    soak = _soak()
    client = _client(soak)
    client.last_seq = 0
    client.handle("scalars", 1, _scalars(("clean_0", "loss", 0, 0.0), ("clean_0", "loss", 2, 9.0)))
    client.handle("scalars", 2, _scalars(("chaos_0", "acc", 5, 1.0), ("chaos_0", "acc", 0, 1.0)))
    model = {"clean_0": {"loss": [[0, 0.0], [1, 1.0], [2, 2.0]]}, "chaos_0": {"acc": [[0, 1.0]]}}
    result = client.verify(model, {"chaos_0": 0})
    assert (result["missing"], result["wrong"]) == (1, 1)
    assert any("went back 1 times" in v for v in result["violations"])


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_short_soak_with_restarts_passes_and_says_so() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "15", "--clients", "8", "--restarts", "2"],
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    verdict = lines[-1]
    assert verdict.startswith("SOAK PASS "), verdict
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "clients=8" in verdict, verdict
    fields = dict(f.split("=", 1) for f in verdict.split() if "=" in f)
    assert int(fields["restarts"]) >= 2, verdict  # the watchdog may add one on a loaded machine
    assert int(fields["resets"]) >= 8, verdict  # every client got a reset from each restart

"""JSON for bodies and frames, straight from the typed arrays: one ``orjson`` call per body.

Why orjson: ``benchmarks/bench_encode.py`` timed stdlib ``json``, a hand-built writer (``repr`` per
float, an f-string per point: what the server used before) and ``orjson`` on every shape the server
sends; orjson was 3.5-13x faster than the better of the two on each (float formatting is most of it: ``repr`` of
a float costs ~150 ns, orjson's ~25 ns). Its output is compact (no spaces) and a float is written
in its shortest round-trip form, as ``repr`` does, though not always with the same spelling
(``1e-05`` becomes ``0.00001``): any JSON parser reads back the same double.

The SPEC's rule for non-finite floats (not valid JSON) holds here too: NaN and ±inf go out as the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (``Number(s)`` / ``float(s)`` read them).
orjson itself would write ``null``, so every float column passes :func:`json_floats` first: one
C-level ``sum`` tells a finite column (the usual case, sent as is) from one that needs the exact
per-value pass.

With the C extension the columns of ``/api/series`` and ``format=columns`` frames skip the Python
numbers: ``_speedups.int64_json`` and ``float_json`` write orjson's bytes straight from the arrays
(:func:`float_column_json`), without holding the GIL.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeGuard

import orjson

from lightning_stream.reader import speedup
from lightning_stream.scalars import ScalarBatch

__all__ = [
    "all_finite",
    "columns_json",
    "dumps",
    "float_column_json",
    "json_floats",
    "number_text",
    "points_json",
    "rows_json",
    "series_columns",
    "series_json",
]

NAN, INF, NEG_INF = "NaN", "Infinity", "-Infinity"


def all_finite(values: Iterable[float]) -> bool:
    """True only if every value is finite; may say False for huge finite ones (the slow path is exact too).

    A sum is NaN or infinite when any term is, and stays finite otherwise unless it overflows: one
    C-level pass, and no numpy import (~15 MiB of RSS) for the server.
    """
    return math.isfinite(sum(values))


def number_text(x: float) -> str:
    """One float as the SPEC writes it: ``repr``, or ``"NaN"``/``"Infinity"``/``"-Infinity"`` (quoted)."""
    if math.isfinite(x):
        return repr(x)
    return f'"{NAN}"' if x != x else f'"{INF}"' if x > 0 else f'"{NEG_INF}"'


def json_floats(values: array[float] | Sequence[float]) -> list[Any]:
    """``values`` as a list orjson writes by the SPEC's rule: floats, non-finite ones as strings.

    A sum is NaN or infinite when any term is, and finite otherwise unless it overflows (then the
    exact pass runs for nothing): one C loop over the list, no numpy import for the server.
    """
    out = values.tolist() if isinstance(values, array) else list(values)
    if all_finite(out):
        return out
    return [x if math.isfinite(x) else (NAN if x != x else INF if x > 0 else NEG_INF) for x in out]


def dumps(obj: Any) -> bytes:
    """Compact JSON of plain data (dicts with str keys, lists, str, int, float, bool, None).

    Non-finite floats in ``obj`` become ``null`` here (orjson's rule); bodies holding series
    values are built with :func:`json_floats` so theirs follow the SPEC's string rule. A string
    orjson refuses (a lone surrogate: a run directory whose name is not valid UTF-8 decodes to one)
    is written by the stdlib as a ``\\udcXX`` escape instead, as before orjson.
    """
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=_COMPACT).encode()


_COMPACT = (",", ":")


def rows_json(batch: ScalarBatch) -> bytes:
    """``[[step, wall_time, value], ...]``: the REST ``points`` of ``/api/scalars``.

    With the C extension written straight from the arrays (``_speedups.rows_json``: the same bytes,
    without a Python number per value).
    """
    rows, s, w, v = _rows_json, batch.steps, batch.wall_times, batch.values
    if rows is not None and _typed(s, "q") and _typed(w, "d") and _typed(v, "d") and len(s) == len(w) == len(v):
        return rows(s, w, v)
    return dumps(list(zip(s.tolist(), json_floats(w), json_floats(v), strict=True)))


def _typed(column: object, typecode: str) -> TypeGuard[array[Any]]:
    """Whether ``column`` is an ``array`` of ``typecode``: what the C writers take."""
    return isinstance(column, array) and column.typecode == typecode


def points_json(batches: Iterable[ScalarBatch]) -> bytes:
    """``{"points": [{"run", "tag", "step", "wall_time", "value"}, ...]}``: the SPEC's default frame."""
    points = [
        {"run": b.run, "tag": b.tag, "step": s, "wall_time": w, "value": v}
        for b in batches
        for s, w, v in zip(b.steps.tolist(), json_floats(b.wall_times), json_floats(b.values), strict=True)
    ]
    return dumps({"points": points})


def series_columns(batch: ScalarBatch, **extra: Any) -> dict[str, Any]:
    """``{"run", "tag", "steps", "wall_times", "values", **extra}`` ready for :func:`dumps` (columnar)."""
    return {
        "run": batch.run,
        "tag": batch.tag,
        "steps": batch.steps.tolist(),
        "wall_times": json_floats(batch.wall_times),
        "values": json_floats(batch.values),
        **extra,
    }


def series_json(batch: ScalarBatch, *, decimated: bool) -> bytes:
    """``{"run","tag","steps","wall_times","values","decimated"}``, a ``/api/series`` entry: the bytes of
    ``dumps(series_columns(batch, decimated=decimated))``, column by column.

    With the C extension every column is written from its array, without the GIL: steps by
    ``_speedups.int64_json`` (a Python int per step costs more than orjson's writing of it, ~30 ms a
    million), floats by ``_speedups.float_json`` (orjson's bytes, see :func:`float_column_json`). Names
    go through :func:`dumps`, so one orjson refuses is written by the stdlib and the numbers keep
    orjson's spelling.
    """
    return _columns_entry(batch, b',"decimated":true}' if decimated else b',"decimated":false}')


def _columns_entry(batch: ScalarBatch, tail: bytes) -> bytes:
    """``{"run","tag","steps","wall_times","values"`` + ``tail``: a series' columns, each from its array."""
    steps, int64_json = batch.steps, _int64_json
    steps_text = int64_json(steps) if int64_json is not None and _typed(steps, "q") else dumps(steps.tolist())
    head = dumps({"run": batch.run, "tag": batch.tag})
    return b"".join(
        (
            head[:-1],
            b',"steps":',
            steps_text,
            b',"wall_times":',
            float_column_json(batch.wall_times),
            b',"values":',
            float_column_json(batch.values),
            tail,
        )
    )


def float_column_json(values: array[float] | Sequence[float]) -> bytes:
    """``dumps(json_floats(values))``: a float column by the SPEC's rule, written by C when it can be.

    ``_speedups.float_json`` writes an ``array('d')`` byte for byte as orjson does (Ryu's shortest
    digits in orjson's spelling, ``tests/test_encoding.py`` compares them) in ~40% less CPU than
    ``tolist()`` + orjson, and without holding the GIL (``benchmarks/bench_encode.py``, ``floats``).
    """
    float_json = _float_json
    if float_json is not None and _typed(values, "d"):
        return float_json(values)
    return dumps(json_floats(values))


_int64_json: Callable[[array[int]], bytes] | None = speedup("int64_json")
_float_json: Callable[[array[float]], bytes] | None = speedup("float_json")
_rows_json: Callable[[array[int], array[float], array[float]], bytes] | None = speedup("rows_json")


def columns_json(batches: Iterable[ScalarBatch]) -> bytes:
    """``{"series": [{"run", "tag", "steps", "wall_times", "values"}, ...]}``: a ``format=columns`` frame.

    The bytes of ``dumps({"series": [series_columns(b) for b in batches]})``; a big frame is written series
    by series as :func:`series_json` writes its entries (then a name orjson refuses only sends the names
    through the stdlib).
    """
    batches = list(batches)
    if sum(len(b.steps) for b in batches) < COLUMNS_FROM_ARRAYS_MIN_POINTS:  # a live frame: one orjson call is faster
        return dumps({"series": [series_columns(b) for b in batches]})
    return b'{"series":[' + b",".join([_columns_entry(b, b"}") for b in batches]) + b"]}"


COLUMNS_FROM_ARRAYS_MIN_POINTS = 512
"""Points from which a ``format=columns`` frame is written column by column from the arrays (C when
built): below, the calls per series cost more than the Python numbers (``benchmarks/bench_encode.py``)."""

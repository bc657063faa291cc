"""Encoding bodies and frames: stdlib ``json`` vs ``orjson`` vs hand-built writers over the typed arrays.

What the server encodes, from the hub's typed arrays (``array('q')`` steps, ``array('d')`` wall times and
values), each shape timed with every candidate in this process (best of ``--repeat``):

* ``rows``: the REST ``/api/scalars`` body, ``[[step, wall_time, value], ...]``, one 10,000-point series;
* ``columns``: the ``/api/series`` body and ``format=columns`` frames,
  ``{"run", "tag", "steps": [...], "wall_times": [...], "values": [...]}``, 100 series x 10,000 points;
* ``points``: the SPEC's default SSE/WS frame, ``{"points": [{"run","tag","step","wall_time","value"}, ...]}``,
  2,000 points over 10 series (``hub.MAX_MESSAGE_POINTS``, a full frame) and 10 points (a live frame).

Candidates: ``json`` = ``json.dumps`` of Python lists/dicts made with ``tolist()``; ``hand`` = the
hand-built text (``repr`` per float, f-string per point, as ``hub.py`` wrote before this benchmark);
``orjson`` = ``orjson.dumps`` of the same Python objects; ``orjson+template``
(points only) = numbers formatted by ``orjson`` in one call per column, joined into the point template;
``C (server)`` (rows, columns) = the server's own writers, ``_speedups.rows_json`` / ``int64_json`` +
``float_json`` from the arrays (orjson's bytes exactly, checked), when the C extension is built. The last
line (``floats``) is CPU ms per million floats of one column, orjson's path against ``float_json``.
Every candidate's output is checked to decode to the same values. NaN/Inf are not in these inputs: the
server sends them as strings on a slower exact path (``encoding.py``), measured separately (``nonfinite``).

    .venv/bin/python benchmarks/bench_encode.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson


def make_series(n: int, seed: int) -> tuple[array[int], array[float], array[float]]:
    rnd = random.Random(seed)
    t0 = 1_764_000_000.0 + seed
    steps = array("q", range(n))
    walls = array("d", (t0 + i * 0.0123 + rnd.random() * 1e-3 for i in range(n)))
    values = array("d", (math.exp(-i / 3000) + rnd.gauss(0, 0.01) for i in range(n)))
    values = array("d", array("f", values))  # float32 as logged, widened: what the reader holds
    return steps, walls, values


# ---------------------------------------------------------------- rows (/api/scalars)


def rows_json(s: array[int], w: array[float], v: array[float]) -> bytes:
    return json.dumps([list(t) for t in zip(s.tolist(), w.tolist(), v.tolist(), strict=True)]).encode()


def rows_hand(s: array[int], w: array[float], v: array[float]) -> bytes:
    return ("[" + ",".join([f"[{a},{b!r},{c!r}]" for a, b, c in zip(s, w, v, strict=True)]) + "]").encode()


def rows_orjson(s: array[int], w: array[float], v: array[float]) -> bytes:
    return orjson.dumps(list(zip(s.tolist(), w.tolist(), v.tolist(), strict=True)))


# ---------------------------------------------------------------- columns (/api/series, format=columns)


def columns_json(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    body = [
        {"run": r, "tag": t, "steps": s.tolist(), "wall_times": w.tolist(), "values": v.tolist()}
        for r, t, s, w, v in series
    ]
    return json.dumps({"series": body}, separators=(",", ":")).encode()


def columns_hand(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    parts = []
    for r, t, s, w, v in series:
        parts.append(
            f'{{"run":{json.dumps(r)},"tag":{json.dumps(t)},"steps":[{",".join(map(str, s))}],'
            f'"wall_times":[{",".join(map(repr, w))}],"values":[{",".join(map(repr, v))}]}}'
        )
    return ('{"series":[' + ",".join(parts) + "]}").encode()


def columns_orjson(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    body = [
        {"run": r, "tag": t, "steps": s.tolist(), "wall_times": w.tolist(), "values": v.tolist()}
        for r, t, s, w, v in series
    ]
    return orjson.dumps({"series": body})


# ---------------------------------------------------------------- points (the SPEC's default frames)


def points_json(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    pts = [
        {"run": r, "tag": t, "step": a, "wall_time": b, "value": c}
        for r, t, s, w, v in series
        for a, b, c in zip(s.tolist(), w.tolist(), v.tolist(), strict=True)
    ]
    return json.dumps({"points": pts}, separators=(",", ":")).encode()


def points_hand(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    parts: list[str] = []
    for r, t, s, w, v in series:
        head = f'{{"run":{json.dumps(r)},"tag":{json.dumps(t)},"step":'
        parts.extend([f'{head}{a},"wall_time":{b!r},"value":{c!r}}}' for a, b, c in zip(s, w, v, strict=True)])
    return ('{"points":[' + ",".join(parts) + "]}").encode()


def points_orjson(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    pts = [
        {"run": r, "tag": t, "step": a, "wall_time": b, "value": c}
        for r, t, s, w, v in series
        for a, b, c in zip(s.tolist(), w.tolist(), v.tolist(), strict=True)
    ]
    return orjson.dumps({"points": pts})


def points_orjson_template(series: list[tuple[str, str, array[int], array[float], array[float]]]) -> bytes:
    parts: list[bytes] = []
    for r, t, s, w, v in series:
        head = b'{"run":' + orjson.dumps(r) + b',"tag":' + orjson.dumps(t) + b',"step":'
        walls = orjson.dumps(w.tolist())[1:-1].split(b",")
        values = orjson.dumps(v.tolist())[1:-1].split(b",")
        mid, tail = b',"wall_time":', b',"value":'
        parts.extend(
            [b"".join((head, b"%d" % a, mid, b, tail, c, b"}")) for a, b, c in zip(s, walls, values, strict=True)]
        )
    return b'{"points":[' + b",".join(parts) + b"]}"


# ---------------------------------------------------------------- harness


def best_of(fn: Callable[[], bytes], repeat: int) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10x smaller inputs, 2 repeats")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    if args.quick:
        args.repeat = 2

    one = make_series(10_000 // scale, 1)
    many = [(f"run_{i // 10:02d}", f"metric/tag_{i % 10:02d}", *make_series(10_000 // scale, i)) for i in range(100)]
    frame = [("run_00", f"metric/tag_{i:02d}", *make_series(200, i)) for i in range(10)]
    live = [("run_00", "train/loss", *make_series(10, 7))]

    server = server_candidates(one, many, frame)
    shapes: list[tuple[str, int, dict[str, Callable[[], bytes]]]] = [
        (
            "rows (/api/scalars, 1 x 10k)",
            len(one[0]),
            {
                "json": lambda: rows_json(*one),
                "hand": lambda: rows_hand(*one),
                "orjson": lambda: rows_orjson(*one),
                **server["rows"],
            },
        ),
        (
            "columns (/api/series, 100 x 10k)",
            sum(len(m[2]) for m in many),
            {
                "json": lambda: columns_json(many),
                "hand": lambda: columns_hand(many),
                "orjson": lambda: columns_orjson(many),
                **server["columns"],
            },
        ),
        (
            "columns frame (10 x 200)",
            2000,
            {
                "json": lambda: columns_json(frame),
                "hand": lambda: columns_hand(frame),
                "orjson": lambda: columns_orjson(frame),
                **server["frame"],
            },
        ),
        (
            "points frame (10 x 200)",
            2000,
            {
                "json": lambda: points_json(frame),
                "hand": lambda: points_hand(frame),
                "orjson": lambda: points_orjson(frame),
                "orjson+template": lambda: points_orjson_template(frame),
            },
        ),
        (
            "points frame (1 x 10, live)",
            10,
            {
                "json": lambda: points_json(live),
                "hand": lambda: points_hand(live),
                "orjson": lambda: points_orjson(live),
                "orjson+template": lambda: points_orjson_template(live),
            },
        ),
    ]
    print(
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores, best of {args.repeat}"
    )
    print(f"{'shape':<34}{'candidate':<17}{'ms':>10}{'M points/s':>12}{'MB':>8}{'vs json':>9}")
    for name, npoints, candidates in shapes:
        base = None
        reference = None
        for cand, fn in candidates.items():
            if npoints <= 100:  # tiny frames: time a thousand at once
                seconds, out = best_of(lambda fn=fn: b"".join(fn() for _ in range(1000)), args.repeat)
                seconds /= 1000
                out = fn()
            else:
                seconds, out = best_of(fn, args.repeat)
            decoded = json.loads(out)
            if reference is None:
                reference = decoded
            elif decoded != reference:
                sys.exit(f"{cand} encodes {name} differently from json")
            base = base or seconds
            print(
                f"{name:<34}{cand:<17}{seconds * 1000:>10.3f}{npoints / seconds / 1e6:>12.2f}"
                f"{len(out) / 1e6:>8.2f}{base / seconds:>8.1f}x"
            )
    print(nonfinite_line(one, args.repeat))
    print(floats_line(args.repeat, 1_000_000 // scale))


def _server_encoding() -> Any:
    """``lightning_stream.encoding`` when its C writers are built (this checkout's), else None."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from lightning_stream import encoding
    except ImportError:
        return None
    return encoding if encoding._float_json is not None else None


def server_candidates(
    one: tuple[array[int], array[float], array[float]],
    many: list[tuple[str, str, array[int], array[float], array[float]]],
    frame: list[tuple[str, str, array[int], array[float], array[float]]],
) -> dict[str, dict[str, Callable[[], bytes]]]:
    """``C (server)``: the server's own writers (``encoding.py`` with ``_speedups``'s ``int64_json``,
    ``float_json``, ``rows_json``), checked byte for byte against the ``orjson`` candidate."""
    encoding = _server_encoding()
    if encoding is None:
        return {"rows": {}, "columns": {}, "frame": {}}
    from lightning_stream.scalars import ScalarBatch

    row = ScalarBatch("r", "t", *one)
    batches = [ScalarBatch(*m) for m in many]
    frames = [ScalarBatch(*f) for f in frame]

    def columns() -> bytes:
        return b'{"series":[' + b",".join([encoding._columns_entry(b, b"}") for b in batches]) + b"]}"

    if encoding.rows_json(row) != rows_orjson(*one) or columns() != columns_orjson(many):
        sys.exit("the server's C writers do not write orjson's bytes")
    return {
        "rows": {"C (server)": lambda: encoding.rows_json(row)},
        "columns": {"C (server)": columns},
        "frame": {"C (server)": lambda: encoding.columns_json(frames)},
    }


def floats_line(repeat: int, n: int) -> str:
    """CPU ms per million floats of one column (float32 values widened, as logged): ``tolist()`` + orjson,
    the server's path before ``_speedups.float_json``, against it (which also releases the GIL)."""
    encoding = _server_encoding()
    if encoding is None:
        return "floats: the C extension is not built"
    _, _, values = make_series(n, 3)
    cpu: dict[str, float] = {}
    for name, fn in {
        "orjson": lambda: orjson.dumps(encoding.json_floats(values)),
        "C float_json": lambda: encoding._float_json(values),
    }.items():
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            fn()
            best = min(best, time.process_time() - started)
        cpu[name] = best * 1e6 / n * 1000
    return "floats: CPU ms per 1M values: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())


def nonfinite_line(one: tuple[array[int], array[float], array[float]], repeat: int) -> str:
    """The exact slow path for a series holding one NaN (strings for NaN/Inf), against orjson's fast path."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from lightning_stream.encoding import json_floats
    except ImportError:
        return "nonfinite: lightning_stream.encoding not available"
    v = one[2]
    bad = array("d", v)
    bad[len(bad) // 2] = float("nan")
    fast, _ = best_of(lambda: orjson.dumps(json_floats(v)), repeat)
    slow, out = best_of(lambda: orjson.dumps(json_floats(bad)), repeat)
    assert b'"NaN"' in out
    return f"nonfinite: values column of {len(v):,} points, finite {fast * 1000:.3f} ms, one NaN {slow * 1000:.3f} ms"


if __name__ == "__main__":
    main()

"""``encoding.py``: the exact bytes of bodies and frames (orjson), the SPEC's NaN/Inf strings, odd names."""

from __future__ import annotations

import json
import math
import random
import struct
from array import array

import aiohttp
import pytest
from apptools import TIMEOUT, RawSSE, ingest, running_app
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_stream import encoding
from lightning_stream.encoding import (
    columns_json,
    dumps,
    float_column_json,
    json_floats,
    points_json,
    rows_json,
    series_columns,
    series_json,
)
from lightning_stream.scalars import ScalarBatch

NAN, INF = float("nan"), float("inf")


def series(run: str, tag: str, steps: list[int], walls: list[float], values: list[float]) -> ScalarBatch:
    return ScalarBatch(run, tag, array("q", steps), array("d", walls), array("d", values))


def test_points_frame_is_compact_with_shortest_floats() -> None:
    body = points_json([series("r", "loss", [1, 2], [1001.0, 1002.5], [0.1, 1e-05])])
    assert body == (
        b'{"points":[{"run":"r","tag":"loss","step":1,"wall_time":1001.0,"value":0.1},'
        b'{"run":"r","tag":"loss","step":2,"wall_time":1002.5,"value":0.00001}]}'
    )


def test_non_finite_floats_are_strings_in_every_shape() -> None:
    b = series("r", "x", [1, 2, 3], [1.5, NAN, 3.5], [NAN, INF, -INF])
    assert rows_json(b) == b'[[1,1.5,"NaN"],[2,"NaN","Infinity"],[3,3.5,"-Infinity"]]'
    assert points_json([b]) == (
        b'{"points":[{"run":"r","tag":"x","step":1,"wall_time":1.5,"value":"NaN"},'
        b'{"run":"r","tag":"x","step":2,"wall_time":"NaN","value":"Infinity"},'
        b'{"run":"r","tag":"x","step":3,"wall_time":3.5,"value":"-Infinity"}]}'
    )
    assert dumps(series_columns(b, decimated=False)) == (
        b'{"run":"r","tag":"x","steps":[1,2,3],"wall_times":[1.5,"NaN",3.5],'
        b'"values":["NaN","Infinity","-Infinity"],"decimated":false}'
    )


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40),
    floats=st.lists(st.floats(), max_size=40),
    run=st.text(max_size=5) | st.just(b"bad\xff".decode("utf-8", "surrogateescape")),
    decimated=st.booleans(),
)
def test_a_series_entry_has_the_bytes_of_its_columns_whichever_writer(
    steps: list[int], floats: list[float], run: str, decimated: bool
) -> None:
    """``/api/series`` writes its steps with the C extension when built: the bytes of the orjson path.

    A name orjson refuses (a lone surrogate) goes through the stdlib, and then only the names do: the
    numbers keep orjson's spelling (``0.00001``, not ``1e-05``), as in every other body.
    """
    n = min(len(steps), len(floats))
    batch = series(run, "t\u00e9", steps[:n], floats[:n], floats[::-1][:n])
    body = series_json(batch, decimated=decimated)
    columns = series_columns(batch, decimated=decimated)
    if "\udcff" not in run:
        assert body == dumps(columns)
    assert json.loads(body) == json.loads(json.dumps(columns))
    frame, rows = columns_json([batch, batch]), rows_json(batch)
    if "\udcff" not in run:
        assert frame == dumps({"series": [series_columns(batch)] * 2})
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(encoding, "_int64_json", None)
        patched.setattr(encoding, "_float_json", None)
        patched.setattr(encoding, "_rows_json", None)
        assert series_json(batch, decimated=decimated) == body
        assert columns_json([batch, batch]) == frame
        assert rows_json(batch) == rows


def test_the_c_extension_writes_steps_as_orjson_does() -> None:
    _speedups = pytest.importorskip("lightning_stream._speedups", reason="C extension not built")
    edge = [0, -1, 9, 10, 99, 100, 2**63 - 1, -(2**63), 1_000_000]
    assert (
        _speedups.int64_json(array("q", edge)) == b"[0,-1,9,10,99,100,9223372036854775807,-9223372036854775808,1000000]"
    )
    assert _speedups.int64_json(array("q")) == b"[]"
    with pytest.raises(TypeError, match=r"array\('q'\)"):
        _speedups.int64_json(array("d", [1.0]))


def float_edge_cases() -> list[float]:
    """Values where a float writer can go wrong: each spelling's edge, subnormals, signs, non-finite."""
    tens = [10.0**k for k in range(-325, 309)]
    edges = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308]
    edges += [9999999999999998.0, 1e16, 1e-5, 9.999999999999999e-6, 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 2.0**53, 2.0**53 + 2.0]
    edges += [float(i) for i in range(-1000, 1001)] + [2.0**k for k in range(-1074, 1024, 7)]
    edges += [math.nan, -math.nan, math.inf, -math.inf, struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]]
    nearby = [math.nextafter(x, d) for x in tens + edges for d in (-math.inf, math.inf) if math.isfinite(x)]
    return tens + [-x for x in tens] + edges + nearby


def random_floats(n: int, seed: int) -> list[float]:
    """Random bit patterns (every exponent, NaN payloads), float32 values widened (TensorBoard's
    simple_value), subnormals and decimal-looking values."""
    rnd = random.Random(seed)
    out = [struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(n)]
    out += [struct.unpack("<f", rnd.getrandbits(32).to_bytes(4, "little"))[0] for _ in range(n)]
    out += [struct.unpack("<d", rnd.getrandbits(rnd.randint(1, 52)).to_bytes(8, "little"))[0] for _ in range(n)]
    out += [round(rnd.uniform(-1, 1), rnd.randint(0, 17)) * 10.0 ** rnd.randint(-30, 30) for _ in range(n)]
    return out


def test_the_c_extension_writes_floats_as_orjson_does() -> None:
    """``_speedups.float_json`` is byte for byte ``orjson.dumps(json_floats(...))`` (its digits are Ryu's,
    its spelling orjson's): checked on every edge of the spelling and ~80,000 random values."""
    _speedups = pytest.importorskip("lightning_stream._speedups", reason="C extension not built")
    for values in (float_edge_cases(), random_floats(20_000, seed=16)):
        column = array("d", values)
        got, want = _speedups.float_json(column), dumps(json_floats(column))
        if got != want:  # name the first value written differently
            pairs = zip(values, got[1:-1].split(b","), want[1:-1].split(b","), strict=True)
            assert next((x, g, w) for x, g, w in pairs if g != w) is None
    assert _speedups.float_json(array("d")) == b"[]"
    assert _speedups.float_json(array("d", [1e16, 1e-7, -0.0])) == b"[1e+16,1e-7,-0.0]"
    with pytest.raises(TypeError, match=r"array\('d'\)"):
        _speedups.float_json(array("f", [1.0]))


def test_a_float_column_and_rows_are_the_same_bytes_with_or_without_the_c_extension() -> None:
    values = float_edge_cases()
    rows = series("r", "t", list(range(-len(values) // 2, len(values) - len(values) // 2)), values, values[::-1])
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(encoding, "_float_json", None)
        patched.setattr(encoding, "_rows_json", None)
        pure, pure_rows = float_column_json(array("d", values)), rows_json(rows)
    assert float_column_json(array("d", values)) == pure == float_column_json(values)
    assert rows_json(rows) == pure_rows


def test_the_c_extension_writes_rows_as_orjson_does() -> None:
    _speedups = pytest.importorskip("lightning_stream._speedups", reason="C extension not built")
    walls, values = random_floats(5_000, seed=3), float_edge_cases()
    n = min(len(walls), len(values))
    rnd = random.Random(5)
    steps = [rnd.randint(-(2**63), 2**63 - 1) for _ in range(n)]
    batch = series("r", "t", steps, walls[:n], values[:n])
    want = dumps(list(zip(steps, json_floats(batch.wall_times), json_floats(batch.values), strict=True)))
    assert _speedups.rows_json(batch.steps, batch.wall_times, batch.values) == want
    assert _speedups.rows_json(array("q"), array("d"), array("d")) == b"[]"
    with pytest.raises(ValueError, match="three columns of one length, not 1, 0 and 1"):
        _speedups.rows_json(array("q", [1]), array("d"), array("d", [1.0]))
    with pytest.raises(TypeError, match=r"array\('d'\)"):
        _speedups.rows_json(array("q", [1]), array("f", [1.0]), array("d", [1.0]))


def test_huge_finite_values_whose_sum_overflows_stay_numbers() -> None:
    assert json_floats(array("d", [1e308, 1e308, -1.0])) == [1e308, 1e308, -1.0]
    assert (
        rows_json(series("r", "x", [1, 2], [1e308, 1e308], [1e308, 1e308])) == b"[[1,1e+308,1e+308],[2,1e+308,1e+308]]"
    )


def test_names_that_are_not_valid_utf8_are_escaped_not_refused() -> None:
    # A run directory named with invalid UTF-8 bytes decodes (surrogateescape) to a lone surrogate,
    # which orjson refuses; the body must still be valid JSON naming the same run.
    run = b"bad\xff".decode("utf-8", "surrogateescape")
    body = points_json([series(run, "t", [1], [1.0], [2.0])])
    assert body == b'{"points":[{"run":"bad\\udcff","tag":"t","step":1,"wall_time":1.0,"value":2.0}]}'
    assert json.loads(body)["points"][0]["run"] == run
    assert json.loads(dumps({"run": "caf\u00e9"})) == {"run": "caf\u00e9"}


async def test_sse_frame_and_rest_body_bytes_on_the_wire() -> None:
    async with running_app() as app:
        raw = await RawSSE.open(app)
        try:
            assert await raw.read_until(b"\n\n") == b"retry: 2000\n\n"
            ingest(app.hub, series("r", "loss", [7], [1002.5], [1e-05]))
            assert await raw.read_until(b"\n\n") == (
                b'id: 1\nevent: scalars\ndata: {"points":[{"run":"r","tag":"loss","step":7,'
                b'"wall_time":1002.5,"value":0.00001}]}\n\n'
            )
        finally:
            await raw.close()
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as s,
            s.get(app.url + "/api/scalars", params={"run": "r", "tag": "loss"}) as r,
        ):
            assert r.status == 200
            assert r.content_type == "application/json"
            assert await r.read() == b'{"run":"r","tag":"loss","seq":1,"points":[[7,1002.5,0.00001]]}'


async def test_series_body_is_written_a_series_at_a_time_with_the_same_bytes() -> None:
    async with running_app() as app:
        ingest(app.hub, series("a", "x", [1, 2], [1.5, 2.5], [0.5, NAN]), series("b", "y", [3], [3.5], [1e-05]))
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as s,
            s.get(app.url + "/api/series", params={"run": "*", "tag": "*"}) as r,
        ):
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
            assert r.headers.get("Transfer-Encoding") == "chunked"  # never the whole body in memory
            assert await r.read() == (
                b'{"seq":1,"series":[{"run":"a","tag":"x","steps":[1,2],"wall_times":[1.5,2.5],'
                b'"values":[0.5,"NaN"],"decimated":false},{"run":"b","tag":"y","steps":[3],'
                b'"wall_times":[3.5],"values":[0.00001],"decimated":false}]}'
            )

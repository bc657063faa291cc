"""Series storage: typed arrays, the TensorBoard purge rule, decimation that keeps what matters."""

from __future__ import annotations

import itertools
import math
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_stream.series import BYTES_PER_POINT, MIN_DECIMATE, Series


def _extend(series: Series, steps: list[int], values: list[float] | None = None) -> int:
    vals = values if values is not None else [float(s) for s in steps]
    return series.extend(array("q", steps), array("d", [1000.0 + s for s in steps]), array("d", vals))


def test_points_are_held_in_typed_arrays_at_24_bytes_each() -> None:
    series = Series("run", "loss")
    for start in range(0, 100_000, 1000):
        _extend(series, list(range(start, start + 1000)))
    assert (series.steps.typecode, series.wall_times.typecode, series.values.typecode) == ("q", "d", "d")
    assert len(series) == 100_000
    per_point = series.nbytes() / len(series)
    assert BYTES_PER_POINT <= per_point <= 32
    assert sys.getsizeof(series.steps) < 100_000 * 9  # one int64 each, not Python ints


def test_lower_step_purges_held_points_at_and_after_it() -> None:
    series = Series("run", "loss")
    _extend(series, list(range(100)))
    purged = _extend(series, [50, 51, 52], [-1.0, -2.0, -3.0])
    assert purged == 50
    assert list(series.steps) == [*range(50), 50, 51, 52]
    assert list(series.values)[-3:] == [-1.0, -2.0, -3.0]


def test_repeated_last_step_replaces_the_point() -> None:
    series = Series("run", "loss")
    _extend(series, [1, 2, 3])
    assert _extend(series, [3], [9.0]) == 1
    assert list(series.steps) == [1, 2, 3]
    assert series.values[-1] == 9.0


def test_restart_inside_one_batch_is_applied_in_order() -> None:
    series = Series("run", "loss")
    _extend(series, [0, 1, 2, 3, 4, 5, 2, 3, 10, 0])
    assert list(series.steps) == [0]
    _extend(series, [5, 6, 7, 6, 8])
    assert list(series.steps) == [0, 5, 6, 8]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-50, 50), max_size=20), max_size=10))
def test_purge_rule_matches_a_point_by_point_model(batches: list[list[int]]) -> None:
    series = Series("run", "loss")
    model: list[tuple[int, float]] = []
    counter = 0.0
    for steps in batches:
        values = []
        for step in steps:
            counter += 1
            values.append(counter)
            model = [p for p in model if p[0] < step] + [(step, counter)]
        _extend(series, steps, values)
    assert list(zip(series.steps, series.values, strict=True)) == model


def test_extend_rejects_arrays_of_different_lengths() -> None:
    series = Series("run", "loss")
    with pytest.raises(ValueError, match="same length"):
        series.extend(array("q", [1, 2]), array("d", [1.0]), array("d", [1.0, 2.0]))
    assert len(series) == 0


def test_query_returns_points_after_since_step_limited_in_step_order() -> None:
    series = Series("run", "loss")
    _extend(series, [0, 10, 20, 30, 40])
    assert list(series.query().steps) == [0, 10, 20, 30, 40]
    assert list(series.query(since_step=10).steps) == [20, 30, 40]
    assert list(series.query(since_step=15, limit=2).steps) == [20, 30]
    assert list(series.query(since_step=40).steps) == []
    assert list(series.query(limit=0).steps) == []
    assert list(series.query(since_step=-5, limit=1).steps) == [0]


def test_decimation_keeps_first_newest_and_extrema() -> None:
    series = Series("run", "loss")
    n = 10_000
    values = [math.sin(i / 50) for i in range(n)]
    values[1234] = 100.0  # an old spike
    values[4321] = -100.0  # an old dip
    _extend(series, list(range(n)), values)
    dropped = series.decimate()
    assert dropped > n // 4
    assert len(series) == n - dropped
    steps = list(series.steps)
    assert steps[0] == 0
    assert steps[-n // 4 :] == list(range(n - n // 4, n))  # newest quarter untouched
    assert all(a < b for a, b in itertools.pairwise(steps))
    assert max(series.values) == 100.0
    assert min(series.values) == -100.0
    assert 1234 in steps
    assert 4321 in steps


def test_repeated_decimation_converges_and_keeps_newest() -> None:
    series = Series("run", "loss")
    _extend(series, list(range(50_000)))
    while series.decimate():
        pass
    assert len(series) < MIN_DECIMATE
    assert series.steps[0] == 0
    assert series.steps[-1] == 49_999


def test_decimation_keeps_a_nan_visible() -> None:
    series = Series("run", "loss")
    values = [1.0] * 1000
    values[100] = float("nan")
    _extend(series, list(range(1000)), values)
    series.decimate()
    assert any(math.isnan(v) for v in series.values)


def test_an_empty_series_adopts_the_arrays_instead_of_copying_them() -> None:
    steps, times, values = array("q", range(1000)), array("d", [1.0] * 1000), array("d", [2.0] * 1000)
    series = Series("run", "loss")
    series.extend(steps, times, values)
    assert series.steps is steps
    assert series.wall_times is times
    assert series.values is values


def test_adopted_arrays_keep_their_content_through_appends_purges_and_decimation() -> None:
    steps, times, values = array("q", range(100)), array("d", range(100)), array("d", range(100))
    series = Series("run", "loss")
    series.extend(steps, times, values)
    assert _extend(series, [50, 51]) == 50  # purge after adoption: a new array, not a cut in place
    _extend(series, [52, 53])
    assert list(series.steps) == [*range(50), 50, 51, 52, 53]
    assert (list(steps), list(times), list(values)) == ([*range(100)], [*range(100)], [*range(100)])

    again = Series("run", "loss")
    again.extend(steps, times, values)
    again.extend(steps, times, values)  # the same arrays twice: the repeat replaces every point
    assert list(again.steps) == list(range(100))
    again.extend(array("q", [100]), array("d", [0.0]), array("d", [0.0]))
    assert list(steps) == list(range(100))

    big = array("q", range(10_000))
    decimated = Series("run", "loss")
    decimated.extend(big, array("d", [0.0] * 10_000), array("d", [0.0] * 10_000))
    assert decimated.decimate() > 0
    assert list(big) == list(range(10_000))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-50, 50), max_size=80), max_size=8))
def test_callers_arrays_are_never_changed_and_the_purge_model_holds(batches: list[list[int]]) -> None:
    series = Series("run", "loss")
    model: list[tuple[int, float]] = []
    handed: list[tuple[array[int], list[int]]] = []
    counter = 0.0
    for steps in batches:
        values = []
        for step in steps:
            counter += 1
            values.append(counter)
            model = [p for p in model if p[0] < step] + [(step, counter)]
        arr = array("q", steps)
        handed.append((arr, list(steps)))
        series.extend(arr, array("d", values), array("d", values))
    assert list(zip(series.steps, series.values, strict=True)) == model
    assert all(list(arr) == original for arr, original in handed)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-5, 5), max_size=100))
def test_restart_points_are_found_alike_with_and_without_numpy(steps: list[int]) -> None:
    from lightning_stream.series import _breaks_numpy, _breaks_python

    expected = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    as_array = array("q", steps)
    assert _breaks_python(as_array) == expected
    if len(steps) >= 2:
        import numpy

        assert _breaks_numpy(numpy, as_array) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-5, 5), max_size=100))
def test_restart_points_are_found_alike_by_the_c_extension(steps: list[int]) -> None:
    _speedups = pytest.importorskip("lightning_stream._speedups", reason="C extension not built")
    from lightning_stream.series import _breaks_python

    as_array = array("q", steps)
    assert _speedups.step_breaks(as_array) == _breaks_python(as_array)


def test_the_c_restart_check_takes_only_arrays_of_steps() -> None:
    _speedups = pytest.importorskip("lightning_stream._speedups", reason="C extension not built")
    with pytest.raises(TypeError, match=r"array\('q'\)"):
        _speedups.step_breaks(array("d", [1.0, 2.0]))


# -- windowed queries (GET /api/series) --------------------------------------------------------


def test_window_is_inclusive_at_both_ends_and_open_when_a_bound_is_none() -> None:
    series = Series("run", "loss")
    _extend(series, [0, 2, 4, 6, 8])
    assert list(series.window(2, 6).batch.steps) == [2, 4, 6]
    assert list(series.window(3, 5).batch.steps) == [4]
    assert list(series.window(None, 4).batch.steps) == [0, 2, 4]
    assert list(series.window(5, None).batch.steps) == [6, 8]
    assert list(series.window(9, 20).batch.steps) == []
    assert list(series.window(-5, -1).batch.steps) == []
    whole = series.window()
    assert (list(whole.batch.steps), list(whole.batch.wall_times), list(whole.batch.values)) == (
        [0, 2, 4, 6, 8],
        [1000.0, 1002.0, 1004.0, 1006.0, 1008.0],
        [0.0, 2.0, 4.0, 6.0, 8.0],
    )
    assert not whole.decimated


def test_window_is_a_copy_unaffected_by_later_writes() -> None:
    series = Series("run", "loss")
    _extend(series, list(range(10)))
    window = series.window(0, 9)
    _extend(series, [5, 6])  # a restart purges steps >= 5
    assert list(window.batch.steps) == list(range(10))


def test_window_under_max_points_is_not_decimated() -> None:
    series = Series("run", "loss")
    _extend(series, list(range(100)))
    window = series.window(10, 19, max_points=10)
    assert list(window.batch.steps) == list(range(10, 20))
    assert not window.decimated


def test_decimated_window_keeps_its_first_last_and_extremes_within_max_points() -> None:
    series = Series("run", "loss")
    values = [math.sin(i / 30) for i in range(10_000)]
    values[5000] = 1e4  # a spike
    values[7000] = float("nan")  # a divergence
    _extend(series, list(range(10_000)), values)
    window = series.window(1000, 8999, max_points=100)
    steps = list(window.batch.steps)
    assert window.decimated
    assert len(steps) <= 100
    assert (steps[0], steps[-1]) == (1000, 8999)
    assert 5000 in steps
    assert 7000 in steps
    assert all(a < b for a, b in itertools.pairwise(steps))
    assert [window.batch.values[i] for i in range(len(steps)) if steps[i] == 5000] == [1e4]


def test_max_points_two_or_three_keeps_only_the_ends() -> None:
    series = Series("run", "loss")
    _extend(series, list(range(50)))
    assert list(series.window(max_points=2).batch.steps) == [0, 49]
    assert list(series.window(max_points=3).batch.steps) == [0, 49]


@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=300),
    start=st.integers(-5, 310),
    length=st.integers(0, 320),
    max_points=st.integers(2, 80),
)
@settings(max_examples=300, deadline=None)
def test_decimated_window_keeps_its_ends_and_the_extremes_of_what_it_thins(
    values: list[float], start: int, length: int, max_points: int
) -> None:
    series = Series("run", "loss")
    steps = [3 * i for i in range(len(values))]  # gaps, so window bounds fall between steps too
    _extend(series, steps, values)
    lo_step, hi_step = start, start + length
    inside = [(s, v) for s, v in zip(steps, values, strict=True) if lo_step <= s <= hi_step]
    window = series.window(lo_step, hi_step, max_points=max_points)
    got = list(zip(window.batch.steps, window.batch.values, strict=True))
    kept = [s for s, _ in got]
    assert all(a < b for a, b in itertools.pairwise(kept))
    assert set(kept) <= {s for s, _ in inside}
    for s, v in got:  # each kept point is the series' own point
        original = values[s // 3]
        assert (math.isnan(v) and math.isnan(original)) or v == original
    if len(inside) <= max_points:
        assert not window.decimated
        assert kept == [s for s, _ in inside]
        return
    assert window.decimated
    assert len(kept) <= max_points
    assert (kept[0], kept[-1]) == (inside[0][0], inside[-1][0])
    # The global extremes (first NaN, else min and max) are always among the kept points.
    inner = inside[1:-1]
    if (max_points - 2) // 2 and inner:
        nans = [s for s, v in inner if math.isnan(v)]
        if nans:
            assert nans[0] in kept
        else:
            assert min(inner, key=lambda p: p[1])[1] in [v for _, v in got]
            assert max(inner, key=lambda p: p[1])[1] in [v for _, v in got]

"""EventFileReader: exact values from real writers, incremental reads, corruption, both decoders."""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
import threading
import tracemalloc
from array import array
from pathlib import Path

import pytest
from eventfiles import (
    Point,
    by_tag,
    f32,
    file_version_event,
    read_all,
    record_bounds,
    records,
    scalar_tensor,
    scalars_metadata,
    simple_event,
    tensor_event,
    write_tensorboardx,
    write_torch,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_stream import reader as reader_module
from lightning_stream.reader import EventFileReader, decode_records_py
from lightning_stream.tfrecord import frame, masked_crc32c

try:
    from lightning_stream import _speedups
except ImportError:  # built without a C compiler: only the Python decoder is tested
    _speedups = None  # type: ignore[assignment]

DECODERS = ["python", pytest.param("c", marks=pytest.mark.skipif(_speedups is None, reason="C decoder not built"))]

WALL = 1_700_000_000.123456


@pytest.fixture(params=DECODERS)
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the pure-Python decoder and with the C one."""
    if request.param == "python":
        monkeypatch.setattr(reader_module, "_SPEEDUPS", None)
    else:
        monkeypatch.setattr(reader_module, "_SPEEDUPS", _speedups.decode)
    name: str = request.param
    return name


def sample_points(n: int = 50, tags: tuple[str, ...] = ("loss", "acc/val")) -> list[Point]:
    return [(tag, step, WALL + step * 0.5, 1.0 / (step + 3) + i) for step in range(n) for i, tag in enumerate(tags)]


def read_file(path: Path, run: str = "run") -> list[Point]:
    return read_all(EventFileReader(path, run).read())


# ---------------------------------------------------------------- real writers, exact values


@pytest.mark.torch
def test_torch_simple_value_scalars_are_read_exactly(tmp_path: Path, decoder: str) -> None:
    points = sample_points()
    path = write_torch(tmp_path, points)
    reader = EventFileReader(path, "r")
    batches = reader.read()
    assert {b.run for b in batches} == {"r"}
    assert by_tag(read_all(batches)) == by_tag([(t, s, w, f32(v)) for t, s, w, v in points])
    assert reader.stats["scalars"] == len(points)
    assert reader.stats["records"] == len(points) + 1  # plus the file_version record


@pytest.mark.torch
def test_torch_new_style_tensor_scalars_are_read_exactly(tmp_path: Path, decoder: str) -> None:
    points = sample_points()
    path = write_torch(tmp_path, points, new_style=True)
    assert by_tag(read_file(path)) == by_tag([(t, s, w, f32(v)) for t, s, w, v in points])


@pytest.mark.torch
def test_torch_new_style_double_precision_keeps_every_bit(tmp_path: Path, decoder: str) -> None:
    points = [("x", s, WALL, 0.1 * s + 1e-12) for s in range(20)]
    path = write_torch(tmp_path, points, new_style=True, double=True)
    assert read_file(path) == points


def test_tensorboardx_scalars_are_read_exactly(tmp_path: Path, decoder: str) -> None:
    points = sample_points(30)
    path = write_tensorboardx(tmp_path, points)
    assert by_tag(read_file(path)) == by_tag([(t, s, w, f32(v)) for t, s, w, v in points])


@pytest.mark.torch
def test_batches_are_columnar_typed_arrays_one_per_tag(tmp_path: Path, decoder: str) -> None:
    path = write_torch(tmp_path, sample_points(10))
    batches = EventFileReader(path, "r").read()
    assert sorted(b.tag for b in batches) == ["acc/val", "loss"]
    for batch in batches:
        assert (batch.steps.typecode, batch.wall_times.typecode, batch.values.typecode) == ("q", "d", "d")
        assert list(batch.steps) == list(range(10))


@pytest.mark.parametrize("dtype", ["float", "double", "half", "int32", "int64"])
@pytest.mark.parametrize("content", [False, True], ids=["typed_val", "tensor_content"])
def test_rank0_tensor_scalars_of_every_common_dtype(tmp_path: Path, decoder: str, dtype: str, content: bool) -> None:
    values: list[float] = {"int32": [-7, 0, 3, 2**31 - 1], "int64": [-(2**40), 0, 5, 2**53]}.get(
        dtype, [-2.5, 0.0, 3.0, 1234.0]
    )
    # TF2's writer puts the metadata on the first value of a tag only.
    payloads = [file_version_event()] + [
        tensor_event(
            "t",
            step,
            WALL,
            scalar_tensor(dtype, v, content=content),
            metadata=scalars_metadata() if step == 0 else None,
        )
        for step, v in enumerate(values)
    ]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(payloads))
    got = read_file(path)
    assert [p[3] for p in got] == [float(v) for v in values]
    assert [p[1] for p in got] == list(range(len(values)))


def test_tensors_of_other_plugins_and_untagged_tensors_are_skipped(tmp_path: Path, decoder: str) -> None:
    other = scalars_metadata()
    other.plugin_data.plugin_name = "histograms"
    payloads = [
        tensor_event("hist", 0, WALL, scalar_tensor("float", 1.0), metadata=other),
        tensor_event("hist", 1, WALL, scalar_tensor("float", 2.0)),
        tensor_event("never_declared", 0, WALL, scalar_tensor("float", 3.0)),
        simple_event("kept", 5, WALL, 4.0),
    ]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(payloads))
    reader = EventFileReader(path, "r")
    assert read_all(reader.read()) == [("kept", 5, WALL, 4.0)]
    assert reader.stats["records"] == 4
    assert reader.stats["parse_errors"] == 0


@pytest.mark.torch
def test_images_histograms_and_text_are_skipped_scalars_kept(tmp_path: Path, decoder: str) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("a", 1.5, 0, walltime=WALL)
    writer.add_histogram("h", np.arange(10.0), 0, walltime=WALL)
    writer.add_image("img", np.zeros((3, 4, 4)), 0, walltime=WALL)
    writer.add_text("t", "hello", 0, walltime=WALL)
    writer.add_scalar("a", 2.5, 1, walltime=WALL)
    writer.close()
    (path,) = tmp_path.glob("*tfevents*")
    reader = EventFileReader(path, "r")
    assert read_all(reader.read()) == [("a", 0, WALL, 1.5), ("a", 1, WALL, 2.5)]
    assert reader.stats["records"] == 6
    assert reader.stats["crc_errors"] == reader.stats["parse_errors"] == 0


def test_negative_and_huge_steps_round_trip(tmp_path: Path, decoder: str) -> None:
    steps = [-1, -(2**63), 2**63 - 1, 0, 2**40]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(simple_event("s", step, WALL, 1.0) for step in steps))
    assert [p[1] for p in read_file(path)] == steps


def test_nan_and_infinities_are_preserved(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(simple_event("v", i, WALL, v) for i, v in enumerate([math.inf, -math.inf, math.nan])))
    values = [p[3] for p in read_file(path)]
    assert values[:2] == [math.inf, -math.inf]
    assert math.isnan(values[2])


def test_record_the_hand_decoder_declines_is_decoded_by_protobuf(tmp_path: Path, decoder: str) -> None:
    # A rank-1 tensor of one element with plugin "scalars": not the common layout, still one scalar.
    payload = tensor_event("r1", 7, WALL, scalar_tensor("float", 2.5, dims=[1]), metadata=scalars_metadata())
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("a", 1, WALL, 1.0), payload, simple_event("a", 2, WALL, 2.0)]))
    reader = EventFileReader(path, "r")
    assert sorted(read_all(reader.read())) == [("a", 1, WALL, 1.0), ("a", 2, WALL, 2.0), ("r1", 7, WALL, 2.5)]
    assert reader.stats["records"] == 3


def test_unparsable_payload_with_a_good_checksum_is_one_parse_error(
    tmp_path: Path, decoder: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = [simple_event("a", i, WALL, float(i)) for i in range(3)]
    path = tmp_path / "events.out.tfevents.1.host"
    data = records(good[:1]) + frame(b"\x0b\xff\xff garbage") + records(good[1:])
    path.write_bytes(data)
    reader = EventFileReader(path, "r")
    with caplog.at_level(logging.WARNING, logger="lightning_stream.reader"):
        got = read_all(reader.read())
    assert [p[1] for p in got] == [0, 1, 2]
    assert reader.stats["parse_errors"] == 1
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{path}: skipped an unparsable record at byte offset {len(records(good[:1]))} (")


# ---------------------------------------------------------------- incremental reading


def test_second_read_returns_only_new_points(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    first = [simple_event("a", i, WALL, float(i)) for i in range(5)]
    later = [simple_event("a", i, WALL, float(i)) for i in range(5, 8)]
    path.write_bytes(records(first))
    reader = EventFileReader(path, "r")
    assert [p[1] for p in read_all(reader.read())] == [0, 1, 2, 3, 4]
    assert reader.read() == []
    with path.open("ab") as f:
        f.write(records(later))
    assert [p[1] for p in read_all(reader.read())] == [5, 6, 7]
    assert reader.offset == path.stat().st_size


def test_read_with_max_points_hands_a_big_file_over_in_slices(
    tmp_path: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "CHUNK_SIZE", 256)
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(simple_event("a", i, WALL, float(i)) for i in range(100)))
    reader = EventFileReader(path, "r")
    slices = []
    while True:
        got = read_all(reader.read(max_points=10))
        slices.append(len(got))
        if reader.at_end:
            break
    assert sum(slices) == 100
    assert len(slices) > 3
    assert max(slices) < 30  # a slice ends with the chunk that reached the limit
    assert reader.read() == []


def test_record_split_at_every_byte_offset_is_read_once_completed(tmp_path: Path, decoder: str) -> None:
    data = records([file_version_event()] + [simple_event("a", i, WALL, float(i)) for i in range(3)])
    start, end = record_bounds(data)[2]  # the record of step 1: header, payload and footer
    expected = [("a", i, WALL, float(i)) for i in range(3)]
    for cut in range(start, end + 1):
        path = tmp_path / f"events.out.tfevents.{cut}.host"
        path.write_bytes(data[:cut])
        reader = EventFileReader(path, "r")
        got = read_all(reader.read())
        with path.open("ab") as f:
            f.write(data[cut:])
        got += read_all(reader.read())
        got += read_all(reader.read())
        assert got == expected, f"split at byte {cut}"
        assert reader.stats["crc_errors"] == reader.stats["bad_lengths"] == 0, f"split at byte {cut}"


def test_large_record_spanning_several_chunks_is_read(
    tmp_path: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "CHUNK_SIZE", 64)
    long_tag = "t" * 300
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event(long_tag, i, WALL, float(i)) for i in range(4)]))
    assert [(p[0], p[1]) for p in read_file(path)] == [(long_tag, i) for i in range(4)]


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("a", i, WALL, 1.0) for i in range(10)]))
    reader = EventFileReader(path, "r")
    assert len(read_all(reader.read())) == 10
    path.write_bytes(records([simple_event("a", i, WALL, 2.0) for i in range(3)]))  # truncates in place
    assert read_all(reader.read()) == [("a", i, WALL, 2.0) for i in range(3)]
    assert reader.stats["restarts"] == 1


def test_replaced_file_is_read_again_from_the_start(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("a", i, WALL, 1.0) for i in range(3)]))
    reader = EventFileReader(path, "r")
    assert len(reader.read()[0]) == 3
    other = tmp_path / "replacement"
    other.write_bytes(records([simple_event("a", i, WALL, 9.0) for i in range(5)]))
    os.replace(other, path)
    assert read_all(reader.read()) == [("a", i, WALL, 9.0) for i in range(5)]
    assert reader.stats["restarts"] == 1


def test_file_rewritten_in_place_to_a_larger_size_is_detected(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("a", i, WALL, 1.0) for i in range(3)]))
    reader = EventFileReader(path, "r")
    reader.read()
    with path.open("r+b") as f:  # same inode, never shorter than what was read
        f.write(records([simple_event("b", i, WALL + 1, 5.0) for i in range(6)]))
    assert read_all(reader.read()) == [("b", i, WALL + 1, 5.0) for i in range(6)]
    assert reader.stats["restarts"] == 1


def test_missing_file_reads_nothing(tmp_path: Path, decoder: str) -> None:
    assert EventFileReader(tmp_path / "events.out.tfevents.gone", "r").read() == []


# ---------------------------------------------------------------- corruption


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ (1 << bit)]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("where", "kind"),
    [("length", "bad_lengths"), ("length_crc", "bad_lengths"), ("payload", "crc_errors"), ("footer", "crc_errors")],
)
def test_flipped_bit_loses_only_that_record_with_one_warning(
    tmp_path: Path, decoder: str, caplog: pytest.LogCaptureFixture, where: str, kind: str
) -> None:
    data = records([simple_event("a", i, WALL, float(i)) for i in range(20)])
    start, end = record_bounds(data)[10]
    index = {"length": start + 1, "length_crc": start + 9, "payload": start + 20, "footer": end - 2}[where]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(_flip(data, index, bit=3))
    reader = EventFileReader(path, "r")
    with caplog.at_level(logging.WARNING, logger="lightning_stream.reader"):
        got = read_all(reader.read())
    assert [p[1] for p in got] == [i for i in range(20) if i != 10]
    assert reader.stats[kind] == 1
    assert reader.stats["crc_errors"] + reader.stats["bad_lengths"] == 1
    what = "bad record length" if kind == "bad_lengths" else "bad checksum"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: skipped a record with a {what} at byte offset {start}"
    ]


def test_garbage_length_resyncs_without_hanging_or_allocating(tmp_path: Path, decoder: str) -> None:
    data = records([simple_event("a", i, WALL, float(i)) for i in range(4)])
    garbage = struct.pack("<Q", 2**62) + b"\x00" * 4 + os.urandom(100)  # huge length, wrong checksum
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(data[:100] + garbage + data[100:])
    reader = EventFileReader(path, "r")
    tracemalloc.start()
    try:
        got = read_all(reader.read())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20
    assert reader.stats["bad_lengths"] == 1
    assert {p[1] for p in got} >= {0, 3}


def test_impossible_length_with_a_matching_checksum_is_skipped(tmp_path: Path, decoder: str) -> None:
    length = struct.pack("<Q", 2**50)
    header = length + struct.pack("<I", masked_crc32c(length))
    data = records([simple_event("a", i, WALL, float(i)) for i in range(3)])
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(data + header + os.urandom(50) + data)
    reader = EventFileReader(path, "r")
    got = read_all(reader.read())
    assert [p[1] for p in got] == [0, 1, 2, 0, 1, 2]
    assert reader.stats["bad_lengths"] == 1


def test_half_written_garbage_tail_is_not_reported_twice(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records([simple_event("a", 0, WALL, 0.0)]) + b"\xff" * 30)
    reader = EventFileReader(path, "r")
    assert len(read_all(reader.read())) == 1
    assert reader.read() == []
    with path.open("ab") as f:
        f.write(b"\xee" * 7 + records([simple_event("a", 1, WALL, 1.0)]))
    assert [p[1] for p in read_all(reader.read())] == [1]
    assert reader.stats["bad_lengths"] == 1


# ---------------------------------------------------------------- the two decoders agree


@pytest.mark.torch
@pytest.mark.skipif(_speedups is None, reason="C decoder not built")
@given(
    data=st.binary(max_size=400),
    seed_records=st.lists(st.integers(0, 9), max_size=6),
    cut=st.integers(0, 400),
    lead=st.sampled_from([0, 70]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_c_and_python_decoders_give_identical_results_on_any_bytes(
    data: bytes, seed_records: list[int], cut: int, lead: int
) -> None:
    """``lead`` records of a known tag first: past 64 of them the C decoder runs without the GIL, and
    what follows (new tags, tensors, errors) takes the way back to it."""
    payloads = [
        simple_event("a", 1, WALL, 0.5),
        tensor_event("t", 2, WALL, scalar_tensor("half", 1.5), metadata=scalars_metadata()),
        tensor_event("t", 3, WALL, scalar_tensor("int64", -3, content=True)),
        file_version_event(),
        # Edge cases of the pure-Python fast path for torch's layout (the C decoder has none):
        simple_event("zero", 0, WALL, 1.0),  # step 0: no step field
        simple_event("multi", 300, WALL, 2.0),  # two-byte step
        simple_event("huge", 2**63 - 1, WALL, 3.0),  # nine-byte step
        simple_event("neg", -5, WALL, 4.0),  # ten-byte step
        simple_event("t" * 200, 7, WALL, 5.0),  # a tag too long for one-byte lengths
        b"\x09" + struct.pack("<d", WALL) + b"\x10\x05\x2a\x0b\x0a\x09\x0a\x02\xff\xfe\x15" + struct.pack("<f", 6.0),
    ]
    buf = records(payloads[i] for i in seed_records)
    buf = records([payloads[0]] * lead) + buf[:cut] + data + buf[cut:]
    for resync in (False, True):
        py_tags: set[str] = set()
        c_tags: set[str] = set()
        py = decode_records_py(buf, 0, py_tags, resync)
        c = _speedups.decode(buf, 0, c_tags, resync)
        assert _comparable(py) == _comparable(c)
        assert py_tags == c_tags


@pytest.mark.skipif(_speedups is None, reason="C decoder not built")
def test_the_c_decoder_lets_other_threads_run_while_it_decodes() -> None:
    """``lightning-stream serve`` reads its logdir while it imports the server (``firstread.py``)."""
    buf = records(simple_event("loss", step, WALL, 0.5) for step in range(1000)) * 200  # ~6 MB
    go, ran = threading.Event(), []

    def other() -> None:
        go.wait()
        ran.append(True)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(100.0)  # no forced hand-over: the other thread runs only if the GIL is let go
    thread = threading.Thread(target=other)
    try:
        thread.start()
        go.set()
        for _ in range(50):  # bounded: the other thread must be scheduled while one of these calls runs
            _speedups.decode(buf, 0, set(), False)
            if ran:
                break
        assert ran, "the other thread never ran during a decode: the C decoder holds the GIL"
    finally:
        sys.setswitchinterval(switch)
        thread.join()


def _comparable(result: tuple[object, ...]) -> tuple[object, ...]:
    pos, stop, resync, count, series, errors = result
    assert isinstance(series, dict)
    cols = {tag: tuple(array.tobytes(c) for c in columns) for tag, columns in series.items()}
    return pos, stop, resync, count, list(cols.items()), errors


# ---------------------------------------------------------------- property: writes, splits, corruptions


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["simple", "tensor", "other"]),
            st.floats(width=32, allow_nan=False),
            st.one_of(st.none(), st.integers(0, 10_000)),  # corrupt this byte of the record (mod its size)
        ),
        min_size=1,
        max_size=25,
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    use_c=st.booleans(),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_writes_splits_and_corruptions_yield_every_intact_point_once(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, float, int | None]],
    cuts: list[int],
    use_c: bool,
) -> None:
    saved = reader_module._SPEEDUPS
    reader_module._SPEEDUPS = _speedups.decode if use_c and _speedups is not None else None
    try:
        data = b""
        expected: list[Point] = []
        corrupted = 0
        for step, (kind, value, corrupt_at) in enumerate(ops):
            if kind == "simple":
                payload = simple_event("s", step, WALL, value)
            elif kind == "tensor":
                payload = tensor_event("t", step, WALL, scalar_tensor("float", value), metadata=scalars_metadata())
            else:
                payload = file_version_event()
            record = frame(payload)
            if corrupt_at is not None:
                record = _flip(record, corrupt_at % len(record), bit=corrupt_at % 8)
                corrupted += 1
            elif kind != "other":
                expected.append(("s" if kind == "simple" else "t", step, WALL, value))
            data += record
        path = tmp_path_factory.mktemp("prop") / "events.out.tfevents.1.host"
        path.write_bytes(b"")
        reader = EventFileReader(path, "r")
        got: list[Point] = []
        written = 0
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            with path.open("ab") as f:
                f.write(data[written:cut])
            written = max(written, cut)
            got += read_all(reader.read())
        got += read_all(reader.read())
        assert by_tag(got) == by_tag(expected)
        errors = reader.stats["crc_errors"] + reader.stats["bad_lengths"]
        # Adjacent records with bad headers are stepped over in one resynchronisation: one error.
        assert (1 <= errors <= corrupted) if corrupted else errors == 0
    finally:
        reader_module._SPEEDUPS = saved


# ---------------------------------------------------------------- the benchmarks keep working


@pytest.mark.torch
@pytest.mark.slow
def test_bench_ingest_quick_runs_and_reads_every_scalar() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ingest.py"
    only = ["--only", "lightning-stream (Python)"] + (["--only", "lightning-stream (C)"] if _speedups else [])
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", *only], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "lightning-stream (Python)        10,000" in proc.stdout


def test_string_tensor_under_the_scalars_plugin_is_skipped_not_fatal(tmp_path: Path, decoder: str) -> None:
    from tensorboard.compat.proto import tensor_pb2, types_pb2

    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"not a number"])
    payloads = [tensor_event("s", 1, WALL, text, metadata=scalars_metadata()), simple_event("a", 2, WALL, 1.0)]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(payloads))
    reader = EventFileReader(path, "r")
    assert read_all(reader.read()) == [("a", 2, WALL, 1.0)]
    assert reader.stats["parse_errors"] == 0

"""Helpers that write real TensorBoard event files, for the reader, watcher and server tests.

Scalars are written by the real writers (torch ``SummaryWriter`` old and new style, the TensorBoard writer it
wraps, tensorboardX);
layouts those writers never produce (TF2's rank-0 tensors of other dtypes, corrupt records) are
built with tensorboard's own protobuf classes and framed with ``lightning_stream.tfrecord.frame``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from lightning_stream.scalars import ScalarBatch
from lightning_stream.tfrecord import frame

Point = tuple[str, int, float, float]
"""(tag, step, wall_time, value)"""

WALL_TIME = 1_700_000_000.25
"""A wall time to write explicitly, so that tests can compare it exactly."""


def f32(x: float) -> float:
    """``x`` as a float32 written and read back: what simple_value can hold."""
    return float(np.float32(x))


def event_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if "tfevents" in p.name)


def write_torch(logdir: str | Path, points: Iterable[Point], *, new_style: bool = False, double: bool = False) -> Path:
    """Write ``points`` with torch's ``SummaryWriter``; returns the event file."""
    from torch.utils.tensorboard import SummaryWriter

    before = set(event_files(logdir)) if Path(logdir).exists() else set()
    writer = SummaryWriter(str(logdir))
    try:
        for tag, step, wall_time, value in points:
            writer.add_scalar(tag, value, step, walltime=wall_time, new_style=new_style, double_precision=double)
    finally:
        writer.close()
    return _new_file(logdir, before)


def write_tensorboard(logdir: str | Path, points: Iterable[Point]) -> Path:
    """Write ``points`` with TensorBoard's own ``EventFileWriter``, as torch's ``SummaryWriter.add_scalar`` does.

    torch's writer is this writer plus a ``simple_value`` summary, so the files are the same; use it where the
    writer is incidental, so the test also runs where torch is not installed (the torch-free nox sessions).
    """
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    before = set(event_files(logdir)) if Path(logdir).exists() else set()
    writer = EventFileWriter(str(logdir))
    try:
        for tag, step, wall_time, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(step=step, wall_time=wall_time, summary=summary))
    finally:
        writer.close()
    return _new_file(logdir, before)


def write_tensorboardx(logdir: str | Path, points: Iterable[Point]) -> Path:
    """Write ``points`` with tensorboardX's ``SummaryWriter``; returns the event file."""
    from tensorboardX import SummaryWriter

    before = set(event_files(logdir)) if Path(logdir).exists() else set()
    writer = SummaryWriter(str(logdir))
    try:
        for tag, step, wall_time, value in points:
            writer.add_scalar(tag, value, step, walltime=wall_time)
    finally:
        writer.close()
    return _new_file(logdir, before)


def _new_file(logdir: str | Path, before: set[Path]) -> Path:
    (created,) = set(event_files(logdir)) - before
    return created


def read_all(batches: Iterable[ScalarBatch]) -> list[Point]:
    """Flatten batches into (tag, step, wall_time, value), in batch order."""
    return [
        (b.tag, step, wall, value)
        for b in batches
        for step, wall, value in zip(b.steps, b.wall_times, b.values, strict=True)
    ]


def by_tag(points: Iterable[Point]) -> dict[str, list[tuple[int, float, float]]]:
    """Points grouped by tag in order: the reader's output order within a tag is file order."""
    grouped: dict[str, list[tuple[int, float, float]]] = {}
    for tag, step, wall, value in points:
        grouped.setdefault(tag, []).append((step, wall, value))
    return grouped


# ---------------------------------------------------------------- raw events, built with protobuf


def simple_event(tag: str, step: int, wall_time: float, value: float) -> bytes:
    value_pb = summary_pb2.Summary.Value(tag=tag, simple_value=value)
    return event_pb2.Event(
        wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value_pb])
    ).SerializeToString()


def scalars_metadata() -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def tensor_event(
    tag: str,
    step: int,
    wall_time: float,
    tensor: tensor_pb2.TensorProto,
    *,
    metadata: summary_pb2.SummaryMetadata | None = None,
) -> bytes:
    value_pb = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if metadata is not None:
        value_pb.metadata.CopyFrom(metadata)
    return event_pb2.Event(
        wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value_pb])
    ).SerializeToString()


def scalar_tensor(
    dtype: str, value: float, *, content: bool = False, dims: Sequence[int] = ()
) -> tensor_pb2.TensorProto:
    """A ``TensorProto`` holding one value of ``dtype`` (float, double, half, int32, int64), rank 0
    by default, in a typed ``*_val`` field or (``content=True``) in ``tensor_content`` as TF2 writes."""
    np_dtype = {"float": np.float32, "double": np.float64, "half": np.float16, "int32": np.int32, "int64": np.int64}[
        dtype
    ]
    tf_dtype = {
        "float": types_pb2.DT_FLOAT,
        "double": types_pb2.DT_DOUBLE,
        "half": types_pb2.DT_HALF,
        "int32": types_pb2.DT_INT32,
        "int64": types_pb2.DT_INT64,
    }[dtype]
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    proto = tensor_pb2.TensorProto(dtype=tf_dtype, tensor_shape=shape)
    array = np.asarray(value, dtype=np_dtype)
    if content:
        proto.tensor_content = array.tobytes()
    elif dtype == "float":
        proto.float_val.append(float(array))
    elif dtype == "double":
        proto.double_val.append(float(array))
    elif dtype == "half":
        proto.half_val.append(int(array.view(np.uint16)))
    elif dtype == "int32":
        proto.int_val.append(int(array))
    else:
        proto.int64_val.append(int(array))
    return proto


def file_version_event(wall_time: float = 1.0) -> bytes:
    return event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString()


def records(payloads: Iterable[bytes]) -> bytes:
    """The bytes of an event file holding ``payloads``, one record each."""
    return b"".join(frame(p) for p in payloads)


def append_flushed_for(
    path: Path, seconds: float, *, tag: str, pause_every: int, wall_time: float = WALL_TIME, limit: int = 20_000
) -> int:
    """Append one scalar record per step (steps 0, 1, ...) to ``path``, flushing each, for about ``seconds``
    (at least 100 steps, at most ``limit``), sleeping 0.5 ms after every ``pause_every`` steps: a run logging
    thousands of steps a second. Returns the number of steps written."""
    encoded = [records([simple_event(tag, step, wall_time, float(step))]) for step in range(limit)]
    until = time.monotonic() + seconds
    written = 0
    with path.open("ab") as f:
        while written < limit and (written < 100 or time.monotonic() < until):
            f.write(encoded[written])
            f.flush()
            written += 1
            if written % pause_every == 0:
                time.sleep(0.0005)
    return written


def record_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of well-formed event-file bytes."""
    bounds = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 16 + length
        bounds.append((pos, end))
        pos = end
    return bounds

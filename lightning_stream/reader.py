"""Incremental, fault-tolerant reader of the scalars in one TensorBoard event file.

``EventFileReader.read()`` returns only the points written since the previous call: it keeps the
byte offset of the first record it has not consumed, so a growing file is parsed once. A record
still being written is left for the next call; a record with a bad checksum is skipped with one
warning naming the file and offset; a bad length resynchronises on the next valid header; a file
replaced or truncated is read again from the start (counted in ``stats["restarts"]``).

Speed comes from not building protobuf objects: the common layouts (``Event.summary.value`` with
``simple_value``, or a rank-0 ``tensor`` whose tag carries plugin ``scalars``) are decoded by hand,
straight into columnar arrays grouped by tag. Everything else in a ``Summary`` (images, histograms,
text) is stepped over by its length; the hparams a run was started with (once per run) are declined
by the hand decoder and read with protobuf (``EventFileReader.hparams``). Only records the hand decoder does not recognise go
through ``tensorboard``'s protobuf classes. The hand decoder exists twice with identical results:
in C (``lightning_stream._speedups``, built when a compiler is available: ~18 M scalars/s on one
core, CRCs checked) and in pure Python below (the reference and the fallback: ~0.5 M/s, with a
fast path for the exact layout torch and tensorboardX write); ``benchmarks/bench_ingest.py``.

Why one module of this length: the pure-Python decoder is the rule-for-rule reference of
``_speedups.c`` and the fallback of the reader beside it; they are read and fixed together.
"""

from __future__ import annotations

import logging
import os
import struct
from array import array
from collections.abc import Callable
from typing import Any

from lightning_stream.filesystem import DEFAULT_FILESYSTEM, FileStat, FileSystem
from lightning_stream.scalars import ScalarBatch
from lightning_stream.tfrecord import (
    FOOTER_SIZE,
    FRAMING_SIZE,
    HEADER_SIZE,
    MAX_PLAUSIBLE_RECORD,
    MAX_READ_RECORD,
    find_header,
    parse_header,
)

__all__ = [
    "STAT_KEYS",
    "EventFileReader",
    "decode_event_protobuf",
    "decode_records",
    "decode_records_py",
    "has_speedups",
    "speedup",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 2 * 1024 * 1024
"""Bytes read per call to the filesystem; a large file is read in pieces of this size. It also bounds
how long the C decoder holds the GIL in one call (~2 ms), which the server's event loop waits for."""

HPARAMS_TAG = b"_hparams_/session_start_info"
"""Tag of the summary holding a run's hparams (TensorBoard's hparams plugin, ``summary_v2``)."""
HP_METRIC = "hp_metric"

STAT_KEYS = ("records", "scalars", "crc_errors", "bad_lengths", "parse_errors", "restarts", "skipped_large")

# Decoder stop reasons (shared with _speedups.c).
STOP_END = 0
"""Stopped at the end of the buffer or at a record not complete in it."""
STOP_FALLBACK = 1
"""Stopped at a complete, checksummed record the hand decoder does not recognise: decode it with protobuf."""

Columns = tuple["array[int]", "array[float]", "array[float]"]
PointsByTag = dict[str, Columns]  # tag -> its columns (not series.Series, which the hub holds)
DecodeResult = tuple[int, int, bool, int, PointsByTag, list[tuple[str, int]]]
Decoder = Callable[[bytes, int, set[str], bool], DecodeResult]

_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F16 = struct.Struct("<e")
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")

# TensorFlow DataType enum values the hand decoder understands.
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_HALF = 1, 2, 3, 9, 19
_MASK64 = (1 << 64) - 1

# The hand decoder below is the reference for _speedups.c, which follows it rule for rule:
# every read is bounds-checked against the end of the enclosing message, and anything
# unexpected (a group, a varint longer than 10 bytes, a length past the end, a tensor that is
# not rank 0 or not of a common dtype, a tag that is not UTF-8) declines the whole record.


class _Decline(Exception):
    """The hand decoder does not recognise this record; protobuf will try."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A varint of at most 10 bytes ending before ``end``, truncated to 64 bits as protobuf does."""
    result = 0
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            break
    raise _Decline


def _key(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    key = buf[pos]
    if key < 0x80:
        return key, pos + 1
    return _varint(buf, pos, end)


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's length, checked to fit before ``end``; returns (length, start)."""
    n, pos = _varint(buf, pos, end)
    if n > end - pos:
        raise _Decline
    return n, pos


def _skip(buf: bytes, pos: int, key: int, end: int) -> int:
    """Position after the field whose key was just read (wire types 0, 1, 2, 5)."""
    wire = key & 7
    if wire == 0:
        return _varint(buf, pos, end)[1]
    if wire == 2:
        n, pos = _length(buf, pos, end)
        return pos + n
    size = 8 if wire == 1 else 4 if wire == 5 else 0
    if not size or end - pos < size:
        raise _Decline
    return pos + size


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _half(bits: int) -> float:
    return float(_F16.unpack((bits & 0xFFFF).to_bytes(2, "little"))[0])


def _plugin_is_scalars(buf: bytes, pos: int, end: int) -> bool:
    """``SummaryMetadata.plugin_data.plugin_name == "scalars"`` (the last occurrence wins)."""
    found = False
    while pos < end:
        key, pos = _key(buf, pos, end)
        if key != 0x0A:  # plugin_data
            pos = _skip(buf, pos, key, end)
            continue
        n, pos = _length(buf, pos, end)
        sub_end = pos + n
        found = False
        while pos < sub_end:
            key, pos = _key(buf, pos, sub_end)
            if key == 0x0A:  # plugin_name
                n, pos = _length(buf, pos, sub_end)
                found = buf[pos : pos + n] == b"scalars"
                pos += n
            else:
                pos = _skip(buf, pos, key, sub_end)
    return found


def _tensor_value(buf: bytes, pos: int, end: int) -> float:
    """The value of a rank-0 ``TensorProto`` of a common dtype; declines anything else."""
    dtype = 0
    content: bytes | None = None
    values: list[float] = []
    while pos < end:
        key, pos = _key(buf, pos, end)
        if key == 0x08:
            dtype, pos = _varint(buf, pos, end)
        elif key == 0x12:  # tensor_shape: rank 0 means no dim and no unknown_rank
            n, pos = _length(buf, pos, end)
            if n:
                raise _Decline
        elif key == 0x22:  # tensor_content
            n, pos = _length(buf, pos, end)
            content = buf[pos : pos + n]
            pos += n
        elif key == 0x18:  # version_number
            pos = _varint(buf, pos, end)[1]
        elif dtype == _DT_FLOAT and key == 0x2A:  # float_val, packed
            n, pos = _length(buf, pos, end)
            if n % 4:
                raise _Decline
            values.extend(v for (v,) in _F32.iter_unpack(buf[pos : pos + n]))
            pos += n
        elif dtype == _DT_FLOAT and key == 0x2D:
            pos = _skip(buf, pos, key, end)
            values.append(_F32.unpack_from(buf, pos - 4)[0])
        elif dtype == _DT_DOUBLE and key == 0x32:  # double_val, packed
            n, pos = _length(buf, pos, end)
            if n % 8:
                raise _Decline
            values.extend(v for (v,) in _F64.iter_unpack(buf[pos : pos + n]))
            pos += n
        elif dtype == _DT_DOUBLE and key == 0x31:
            pos = _skip(buf, pos, key, end)
            values.append(_F64.unpack_from(buf, pos - 8)[0])
        elif (
            (dtype == _DT_INT32 and key == 0x3A)
            or (dtype == _DT_INT64 and key == 0x52)
            or (dtype == _DT_HALF and key == 0x6A)
        ):
            n, pos = _length(buf, pos, end)
            sub_end = pos + n
            while pos < sub_end:
                v, pos = _varint(buf, pos, sub_end)
                values.append(_half(v) if dtype == _DT_HALF else float(_signed64(v)))
        elif (
            (dtype == _DT_INT32 and key == 0x38)
            or (dtype == _DT_INT64 and key == 0x50)
            or (dtype == _DT_HALF and key == 0x68)
        ):
            v, pos = _varint(buf, pos, end)
            values.append(_half(v) if dtype == _DT_HALF else float(_signed64(v)))
        else:
            raise _Decline
    if content is not None:
        if values:
            raise _Decline
        if dtype == _DT_FLOAT and len(content) == 4:
            return float(_F32.unpack(content)[0])
        if dtype == _DT_DOUBLE and len(content) == 8:
            return float(_F64.unpack(content)[0])
        if dtype == _DT_INT32 and len(content) == 4:
            return float(_I32.unpack(content)[0])
        if dtype == _DT_INT64 and len(content) == 8:
            return float(_I64.unpack(content)[0])
        if dtype == _DT_HALF and len(content) == 2:
            return float(_F16.unpack(content)[0])
        raise _Decline
    if len(values) != 1:
        raise _Decline
    return float(values[0])


def _decode_event(
    buf: bytes, pos: int, end: int, scalar_tags: set[str], out: list[tuple[str, float]]
) -> tuple[int, float]:
    """Hand-decode one ``Event``: appends (tag, value) to ``out``, returns (step, wall_time)."""
    wall_time = 0.0
    step = 0
    while pos < end:
        key, pos = _key(buf, pos, end)
        if key == 0x09:
            pos = _skip(buf, pos, key, end)
            wall_time = _F64.unpack_from(buf, pos - 8)[0]
        elif key == 0x10:
            step, pos = _varint(buf, pos, end)
        elif key == 0x2A:  # summary; when repeated, protobuf merges: the values add up
            n, pos = _length(buf, pos, end)
            sub_end = pos + n
            while pos < sub_end:
                key, pos = _key(buf, pos, sub_end)
                if key == 0x0A:  # value
                    n, pos = _length(buf, pos, sub_end)
                    _decode_value(buf, pos, pos + n, scalar_tags, out)
                    pos += n
                else:
                    pos = _skip(buf, pos, key, sub_end)
        else:
            pos = _skip(buf, pos, key, end)
    return _signed64(step), wall_time


def _decode_value(buf: bytes, pos: int, end: int, scalar_tags: set[str], out: list[tuple[str, float]]) -> None:
    tag = b""
    simple: float | None = None
    tensor: tuple[int, int] | None = None
    metadata: tuple[int, int] | None = None
    while pos < end:
        key, pos = _key(buf, pos, end)
        if key == 0x0A:
            n, pos = _length(buf, pos, end)
            tag = buf[pos : pos + n]
            pos += n
        elif key == 0x15:
            pos = _skip(buf, pos, key, end)
            simple = _F32.unpack_from(buf, pos - 4)[0]
            tensor = None
        elif key == 0x42:
            n, pos = _length(buf, pos, end)
            tensor = (pos, pos + n)
            simple = None
            pos += n
        elif key == 0x4A:
            n, pos = _length(buf, pos, end)
            metadata = (pos, pos + n)
            pos += n
        else:
            pos = _skip(buf, pos, key, end)
            if key in (0x1A, 0x22, 0x2A, 0x32):  # histo, image, histo, audio: another member of the oneof
                simple = None
                tensor = None
    if simple is None and tensor is None:
        if metadata is not None and tag == HPARAMS_TAG:
            raise _Decline  # the run's hparams: rare (once per run), so protobuf reads them
        return
    try:
        name = tag.decode()
    except UnicodeDecodeError:
        raise _Decline from None
    if simple is not None:
        out.append((name, simple))
        return
    assert tensor is not None
    if metadata is not None and _plugin_is_scalars(buf, metadata[0], metadata[1]):
        scalar_tags.add(name)
    if name in scalar_tags:
        out.append((name, _tensor_value(buf, tensor[0], tensor[1])))


def decode_records_py(buf: bytes, pos: int, scalar_tags: set[str], resync: bool) -> DecodeResult:
    """Decode the complete records of ``buf`` from ``pos``: the pure-Python twin of ``_speedups.decode``.

    Returns ``(pos, stop, resync, records, series, errors)``: where it stopped (see ``STOP_*``),
    whether it is inside garbage looking for the next valid header, how many well-framed records it
    consumed, the points by tag, and ``(kind, offset)`` of each error (offsets relative to ``buf``).
    """
    from crc32c import crc32c  # here, not at the top: with the C decoder a server never imports it (~15 ms)

    series: PointsByTag = {}
    errors: list[tuple[str, int]] = []
    records = 0
    size = len(buf)
    view = memoryview(buf)
    points: list[tuple[str, float]] = []
    # Fast path for the layout torch and tensorboardX write for add_scalar (one simple_value, short
    # tag, step > 0): Event{wall_time, step, summary{value{tag, simple_value}}}. Anything else, or
    # anything that does not add up exactly, takes the general decoder below.
    appenders: dict[bytes, tuple[Any, Any, Any]] = {}
    unpack_f64 = _F64.unpack_from
    unpack_f32 = _F32.unpack_from
    unpack_header = _HEADER.unpack_from
    unpack_u32 = _U32.unpack_from
    while True:
        if resync:
            pos = find_header(buf, pos)
            if size - pos < HEADER_SIZE:
                return pos, STOP_END, True, records, series, errors
            resync = False
        if size - pos < HEADER_SIZE:
            return pos, STOP_END, False, records, series, errors
        length, crc = unpack_header(buf, pos)
        c = crc32c(view[pos : pos + 8])
        if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF != crc:  # masked_crc32c, inlined
            errors.append(("bad_lengths", pos))
            resync = True
            pos += 1
            continue
        start = pos + HEADER_SIZE
        end = start + length
        if end + FOOTER_SIZE > size:
            return pos, STOP_END, False, records, series, errors
        c = crc32c(view[start:end])
        if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF != unpack_u32(buf, end)[0]:
            errors.append(("crc_errors", pos))
            pos = end + FOOTER_SIZE
            records += 1
            continue
        if length > 16 and buf[start] == 0x09 and buf[start + 9] == 0x10 and buf[end - 5] == 0x15:
            p = start + 10
            step = buf[p]
            p += 1
            if step >= 0x80:  # a varint of up to 9 bytes (63 bits: never negative)
                step &= 0x7F
                shift = 7
                while p < end and shift < 63:
                    b = buf[p]
                    p += 1
                    step |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                else:
                    step = -1
            n = end - p - 2  # summary length if this is the layout
            if (
                step >= 0
                and n < 0x80
                and buf[p] == 0x2A
                and buf[p + 1] == n
                and buf[p + 2] == 0x0A
                and buf[p + 3] == n - 2
                and buf[p + 4] == 0x0A
                and buf[p + 5] == n - 9
            ):
                tag = buf[p + 6 : end - 5]
                columns = appenders.get(tag)
                if columns is None:
                    try:
                        name = tag.decode()
                    except UnicodeDecodeError:
                        name = None
                    if name is not None:
                        cols = series.get(name)
                        if cols is None:
                            cols = series[name] = (array("q"), array("d"), array("d"))
                        columns = appenders[tag] = (cols[0].append, cols[1].append, cols[2].append)
                if columns is not None:
                    columns[0](step)
                    columns[1](unpack_f64(buf, start + 1)[0])
                    columns[2](unpack_f32(buf, end - 4)[0])
                    records += 1
                    pos = end + FOOTER_SIZE
                    continue
        points.clear()
        try:
            step, wall_time = _decode_event(buf, start, end, scalar_tags, points)
        except _Decline:
            return pos, STOP_FALLBACK, False, records, series, errors
        records += 1
        pos = end + FOOTER_SIZE
        for name, value in points:
            cols = series.get(name)
            if cols is None:
                cols = series[name] = (array("q"), array("d"), array("d"))
            cols[0].append(step)
            cols[1].append(wall_time)
            cols[2].append(value)


# Said once per process when the C decoder is missing, because pip hides the build log that said why.
NO_SPEEDUPS_NOTICE = (
    "the C decoder of lightning-stream (lightning_stream._speedups) is not installed, so event files are read "
    "by the pure-Python decoder: same results, many times slower on large logdirs. It is built when the package "
    "is installed with a C compiler present: install a wheel, or a compiler (gcc, clang, MSVC) and then "
    "'pip install --force-reinstall --no-binary lightning-stream lightning-stream'"
)


def _load_speedups() -> Decoder | None:
    if os.environ.get("LIGHTNING_STREAM_PURE_PYTHON"):
        return None
    try:
        from lightning_stream import _speedups
    except ImportError:
        log.warning(NO_SPEEDUPS_NOTICE)
        return None
    decode: Decoder = _speedups.decode
    return decode


_SPEEDUPS = _load_speedups()


def has_speedups() -> bool:
    """Whether the C decoder was built and is in use (``LIGHTNING_STREAM_PURE_PYTHON=1`` disables it)."""
    return _SPEEDUPS is not None


def speedup(name: str) -> Any:
    """The C extension's function ``name`` when the C decoder is in use (so ``LIGHTNING_STREAM_PURE_PYTHON``
    turns every one off together), else None."""
    if _SPEEDUPS is None:
        return None
    from lightning_stream import _speedups

    return getattr(_speedups, name, None)


def decode_records(buf: bytes, pos: int, scalar_tags: set[str], resync: bool) -> DecodeResult:
    """``decode_records_py`` or its C twin, whichever is available."""
    if _SPEEDUPS is not None:
        return _SPEEDUPS(buf, pos, scalar_tags, resync)
    return decode_records_py(buf, pos, scalar_tags, resync)


def decode_event_protobuf(
    payload: bytes, scalar_tags: set[str], hparams: list[dict[str, Any]] | None = None
) -> tuple[int, float, list[tuple[str, float]]]:
    """Decode an ``Event`` with tensorboard's protobuf classes: the path for unusual records.

    The hparams a run was started with (``_hparams_/session_start_info``, as
    ``TensorBoardLogger.log_hyperparams`` writes them) are appended to ``hparams`` as a dict.
    Raises ``ValueError`` when the payload is not an ``Event``.
    """
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    try:
        event = event_pb2.Event.FromString(payload)
    except DecodeError as exc:
        raise ValueError(f"not an Event: {exc}") from None
    points: list[tuple[str, float]] = []
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind is None and hparams is not None and value.tag == HPARAMS_TAG.decode():
            found = _session_hparams(value.metadata)
            if found is not None:
                hparams.append(found)
        if kind == "simple_value":
            points.append((value.tag, float(value.simple_value)))
        elif kind == "tensor":
            if value.metadata.plugin_data.plugin_name == "scalars":
                scalar_tags.add(value.tag)
            if value.tag in scalar_tags:
                from tensorboard.util import tensor_util

                try:
                    data: Any = tensor_util.make_ndarray(value.tensor)
                    if data.size == 1:
                        points.append((value.tag, float(data.reshape(()).item())))
                except (TypeError, ValueError, KeyError, OverflowError):
                    continue  # not a number (a string tensor, an unknown dtype): not a scalar
    return int(event.step), float(event.wall_time), points


def _session_hparams(metadata: Any) -> dict[str, Any] | None:
    """The hparams of a ``session_start_info`` summary as plain JSON values; None if it is not one."""
    if metadata.plugin_data.plugin_name != "hparams":
        return None
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    except DecodeError:
        return None
    if data.WhichOneof("data") != "session_start_info":
        return None
    return {name: json_format.MessageToDict(value) for name, value in data.session_start_info.hparams.items()}


def _drop_hp_metric_placeholder(out: dict[str, ScalarBatch]) -> None:
    """Drop ``hp_metric`` = -1 at step 0: the placeholder ``TensorBoardLogger.log_hyperparams`` writes.

    Lightning writes it so that TensorBoard's hparams tab has a metric column before the user logs
    a real ``hp_metric``; as a chart it is a single meaningless point (and a tag in every run).
    Dropped here, where event files are interpreted, so that REST, the stream and every client
    agree. A real ``hp_metric`` (any other value or step) is kept; so is a run's own -1 at step 0,
    which cannot be told apart and is lost: that is the price.
    """
    batch = out.get(HP_METRIC)
    if batch is None or 0 not in batch.steps:
        return
    keep = [
        i for i, (step, value) in enumerate(zip(batch.steps, batch.values, strict=True)) if step != 0 or value != -1.0
    ]
    if len(keep) == len(batch):
        return
    if not keep:
        del out[HP_METRIC]
        return
    out[HP_METRIC] = ScalarBatch(
        batch.run,
        batch.tag,
        array("q", (batch.steps[i] for i in keep)),
        array("d", (batch.wall_times[i] for i in keep)),
        array("d", (batch.values[i] for i in keep)),
    )


class EventFileReader:
    """Reads the scalars of one event file incrementally; one call at a time (not thread-safe)."""

    def __init__(self, path: str | os.PathLike[str], run: str, fs: FileSystem | None = None) -> None:
        self.path = os.fspath(path)
        self.run = run
        self._fs: FileSystem = fs if fs is not None else DEFAULT_FILESYSTEM
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._offset = 0
        self._identity: tuple[int, ...] | None = None
        self._tail = b""  # the 4 bytes before _offset: a rewritten file shows other bytes there
        self._resync = False
        self._scalar_tags: set[str] = set()
        self._need = 0
        self._more = False
        self.hparams: dict[str, Any] | None = None
        """The hparams the run was started with (the newest ``session_start_info`` in this file)."""
        self.hparams_changed = False
        """Set when ``read`` found hparams; whoever passes them on clears it."""

    @property
    def at_end(self) -> bool:
        """Whether the last ``read`` consumed everything complete that the file held then."""
        return not self._more

    @property
    def offset(self) -> int:
        """Bytes consumed so far: everything before this offset has been read exactly once."""
        return self._offset

    def _restart(self, stat: FileStat | None) -> None:
        if self._offset:
            self.stats["restarts"] += 1
            log.info("%s: file was replaced or truncated; reading it again from the start", self.path)
        self._offset = 0
        self._tail = b""
        self._resync = False
        self._scalar_tags = set()
        self._need = 0
        self._identity = stat.identity if stat is not None else None

    def read(self, max_points: int | None = None) -> list[ScalarBatch]:
        """The points written since the last call, one ``ScalarBatch`` per tag, in file order.

        With ``max_points``, stops after the chunk that reaches it (``at_end`` then says whether
        more is waiting), which bounds the memory one call holds on a big file.
        """
        self._more = False
        stat = self._fs.stat(self.path)
        if stat is None:
            return []
        if self._identity != stat.identity or stat.size < self._offset:
            self._restart(stat)
        out: dict[str, ScalarBatch] = {}
        scalars_before = self.stats["scalars"]
        while stat.size - self._offset >= HEADER_SIZE:
            if max_points is not None and self.stats["scalars"] - scalars_before >= max_points:
                self._more = True
                break
            back = len(self._tail)
            want = min(stat.size - self._offset, max(CHUNK_SIZE, self._need))
            buf = self._fs.read(self.path, self._offset - back, want + back)
            if buf[:back] != self._tail:  # same file and no shorter, but rewritten underneath us
                self._restart(stat)
                continue
            if len(buf) <= back or not self._consume(buf, back, stat.size, out):
                break
        if HP_METRIC in out:
            _drop_hp_metric_placeholder(out)
        return list(out.values())

    def _consume(self, buf: bytes, back: int, file_size: int, out: dict[str, ScalarBatch]) -> bool:
        """Decode what ``buf[back:]`` holds (it starts at ``self._offset``); False when waiting for data."""
        pos = back
        while True:
            pos, stop, self._resync, records, series, errors = decode_records(buf, pos, self._scalar_tags, self._resync)
            self.stats["records"] += records
            for kind, where in errors:
                self.stats[kind] += 1
                what = "bad checksum" if kind == "crc_errors" else "bad record length"
                log.warning(
                    "%s: skipped a record with a %s at byte offset %d", self.path, what, self._offset + where - back
                )
            self._merge(series, out)
            if stop != STOP_FALLBACK:
                break
            pos = self._fallback(buf, pos, back, out)
        if pos == back:
            header = parse_header(buf, pos)
            if header is None or not header.valid:
                return False
            if header.length > MAX_PLAUSIBLE_RECORD:
                self.stats["bad_lengths"] += 1
                log.warning(
                    "%s: skipped a record with an impossible length %d at byte offset %d",
                    self.path,
                    header.length,
                    self._offset,
                )
                self._resync = True
                self._offset += 1
                self._tail = b""
                return True
            total = FRAMING_SIZE + header.length
            if file_size < self._offset + total:
                return False  # the record is still being written
            if header.length <= MAX_READ_RECORD:
                if total <= self._need:
                    return False  # cannot happen with a filesystem that returns what it was asked for
                self._need = total  # complete on disk but longer than one chunk: read it whole next time
                return True
            # Too long to be a scalar: step over it unread.
            self.stats["records"] += 1
            self.stats["skipped_large"] += 1
            pos = back + total
            self._tail = b""
        elif self._resync or pos < FOOTER_SIZE:
            self._tail = b""
        else:
            self._tail = buf[pos - FOOTER_SIZE : pos]
        self._offset += pos - back
        self._need = 0
        return True

    def _fallback(self, buf: bytes, pos: int, back: int, out: dict[str, ScalarBatch]) -> int:
        """Decode the record at ``pos`` with protobuf; returns the position after it."""
        length: int = _HEADER.unpack_from(buf, pos)[0]
        start = pos + HEADER_SIZE
        payload = bytes(buf[start : start + length])
        self.stats["records"] += 1
        hparams: list[dict[str, Any]] = []
        try:
            step, wall_time, points = decode_event_protobuf(payload, self._scalar_tags, hparams)
        except ValueError as exc:
            self.stats["parse_errors"] += 1
            log.warning(
                "%s: skipped an unparsable record at byte offset %d (%s)", self.path, self._offset + pos - back, exc
            )
            return start + length + FOOTER_SIZE
        if hparams:
            self.hparams, self.hparams_changed = hparams[-1], True
        for tag, value in points:
            batch = out.get(tag)
            if batch is None:
                batch = out[tag] = ScalarBatch(self.run, tag)
            batch.append(step, wall_time, value)
            self.stats["scalars"] += 1
        return start + length + FOOTER_SIZE

    def _merge(self, series: PointsByTag, out: dict[str, ScalarBatch]) -> None:
        for tag, (steps, wall_times, values) in series.items():
            batch = out.get(tag)
            if batch is None:
                out[tag] = ScalarBatch(self.run, tag, steps, wall_times, values)
            else:
                batch.steps.extend(steps)
                batch.wall_times.extend(wall_times)
                batch.values.extend(values)
            self.stats["scalars"] += len(steps)

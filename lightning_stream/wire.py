"""The wire layer: every encoder between the hub's typed arrays and the bytes clients read.

Stream payloads (:func:`payload_json`: ``points`` or ``columns`` scalars, status, reset), their
WebSocket envelope (:func:`ws_json`), the REST rows (:func:`points_rows_json`), the bodies of
``/api/series`` (JSON and CSV) and the per-filter :class:`FrameCache` of the fan-out. Payloads are
cached on the hub's message (``Message.memo``), so each (filter, format) is encoded once per
broadcast, and never for a message nobody reads.

Series are held as typed arrays (``series.py``), so a body is built per column,
never per point: ``array.tolist()`` makes the numbers in one C loop and one
``json.dumps`` call writes the whole column. Each encoding lives in one function
(:func:`series_json`, :func:`csv_chunks`) so a faster encoder can replace it in
one place. The column writers (``hub.json_ints``/``hub.json_floats``) are the hub's, shared
with the ``format=columns`` stream payloads the hub encodes and caches per message.

Non-finite floats follow the rule of every other route (``hub.py``): JSON has no
NaN or ±inf, so they are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
CSV writes the same three words unquoted, which ``float()``, ``pandas.read_csv``
and spreadsheets read as numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lightning_stream.hub import Message, Subscription, View
from lightning_stream.scalars import ScalarBatch
from lightning_stream.series import Window

__all__ = [
    "CSV_HEADER",
    "CSV_ROWS_PER_CHUNK",
    "FrameCache",
    "csv_chunks",
    "json_floats",
    "json_ints",
    "payload_json",
    "points_rows_json",
    "series_json",
    "ws_json",
]

CSV_HEADER = b"run,tag,step,wall_time,value\n"
#: rows per chunk of a streamed CSV (~50 bytes each): what one write holds in memory
CSV_ROWS_PER_CHUNK = 4096


_COMPACT = (",", ":")


def _num(x: float) -> str:
    if math.isfinite(x):
        return repr(x)
    if x != x:
        return '"NaN"'
    return '"Infinity"' if x > 0 else '"-Infinity"'


def _finite(values: Any) -> bool:
    """True only if every value is finite; may say False for huge finite ones (the slow path is exact too).

    A sum is NaN or infinite when any term is, and stays finite otherwise unless it overflows: one
    C-level pass, and no numpy import (~15 MiB of RSS) for the server.
    """
    return math.isfinite(sum(values))


def _encode_points(batches: Iterable[ScalarBatch]) -> str:
    parts: list[str] = []
    for b in batches:
        head = f'{{"run":{json.dumps(b.run)},"tag":{json.dumps(b.tag)},"step":'
        rows = zip(b.steps, b.wall_times, b.values, strict=True)
        if _finite(b.values) and _finite(b.wall_times):
            parts.extend([f'{head}{s},"wall_time":{w!r},"value":{v!r}}}' for s, w, v in rows])
        else:
            parts.extend([f'{head}{s},"wall_time":{_num(w)},"value":{_num(v)}}}' for s, w, v in rows])
    return '{"points":[' + ",".join(parts) + "]}"


def json_ints(column: array[int]) -> str:
    """A JSON array of an int64 column: numbers made in one C loop, one ``json.dumps`` call."""
    return json.dumps(column.tolist(), separators=_COMPACT)


def json_floats(column: array[float]) -> str:
    """A JSON array of a float64 column, non-finite values as ``"NaN"``/``"Infinity"``/``"-Infinity"``."""
    if _finite(column):
        return json.dumps(column.tolist(), separators=_COMPACT)
    return "[" + ",".join([_num(x) for x in column]) + "]"


def _encode_columns(batches: Iterable[ScalarBatch]) -> str:
    parts = [
        f'{{"run":{json.dumps(b.run)},"tag":{json.dumps(b.tag)},"steps":{json_ints(b.steps)},'
        f'"wall_times":{json_floats(b.wall_times)},"values":{json_floats(b.values)}}}'
        for b in batches
    ]
    return '{"series":[' + ",".join(parts) + "]}"


_ENCODERS = {"points": _encode_points, "columns": _encode_columns}


def points_rows_json(batch: ScalarBatch) -> str:
    """``[[step, wall_time, value], ...]`` as JSON text (REST ``points``), non-finite as strings."""
    rows = zip(batch.steps, batch.wall_times, batch.values, strict=True)
    if _finite(batch.values) and _finite(batch.wall_times):
        return "[" + ",".join([f"[{s},{w!r},{v!r}]" for s, w, v in rows]) + "]"
    return "[" + ",".join([f"[{s},{_num(w)},{_num(v)}]" for s, w, v in rows]) + "]"


def payload_json(message: Message, sub: Subscription) -> str | None:
    """Payload JSON for ``sub`` (SSE ``data:``), or None when nothing in it matches the filter; cached.

    scalars: ``{"points": [{"run","tag","step","wall_time","value"}, ...]}``, or with
    ``sub.format == "columns"`` ``{"series": [{"run","tag","steps","wall_times","values"}, ...]}``
    (one entry per series in the message); status: ``{"run", "state", ...fields}``;
    reset: ``{"seq", "reason"}`` (``run``, ``tag``, ``from_step`` when scoped to one series).
    """
    return message.memo(sub, "json", _payload)


def _payload(view: View) -> str | None:
    if view.payload is not None:
        return json.dumps(view.payload, allow_nan=False, separators=_COMPACT)  # finite: publish_status checked
    if not view.batches:
        return None
    return _ENCODERS[view.format](view.batches)


def ws_json(message: Message, sub: Subscription) -> str | None:
    """The WebSocket form: ``{"type": kind, "seq": N, ...payload}`` (one ``seq`` key); cached."""

    def envelope(view: View) -> str | None:
        body = payload_json(message, sub)
        if body is None:
            return None
        if message.kind == "reset":  # its payload already carries "seq"
            return f'{{"type":"reset",{body[1:]}'
        return f'{{"type":"{message.kind}","seq":{message.seq},{body[1:]}'

    return message.memo(sub, "ws", envelope)


class FrameCache:
    """Encoded frames shared by every client with the same filter (fan-out encodes once, not per client).

    Keyed by the message's seq and kind (not the message: holding it would pin its points and JSON
    caches after the replay log dropped it) and the subscription's globs and format, so each
    (filter, format) frame is encoded once per broadcast; bounded by the bytes it holds (oldest
    entries go first).
    """

    def __init__(self, encode: Callable[[Message, Subscription], bytes], max_bytes: int = 8 * 1024 * 1024) -> None:
        self._encode = encode
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: OrderedDict[tuple[int, str, str, str, str], bytes] = OrderedDict()

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0

    def get(self, message: Message, sub: Subscription) -> bytes:
        # A reset reuses the last seq; status and reset frames are the same in every format, a few
        # bytes held twice when both formats are in use.
        key = (message.seq, message.kind, sub.run_glob, sub.tag_glob, sub.format)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._encode(message, sub)
            self._frames[key] = frame
            self._bytes += len(frame)
            while self._bytes > self._max_bytes and len(self._frames) > 1:
                _, old = self._frames.popitem(last=False)
                self._bytes -= len(old)
        return frame


def series_json(seq: int, windows: Iterable[Window]) -> str:
    """``{"seq": N, "series": [{"run","tag","steps","wall_times","values","decimated"}, ...]}``, compact."""
    parts = [
        f'{{"run":{json.dumps(b.run)},"tag":{json.dumps(b.tag)},"steps":{json_ints(b.steps)},'
        f'"wall_times":{json_floats(b.wall_times)},"values":{json_floats(b.values)},'
        f'"decimated":{"true" if decimated else "false"}}}'
        for b, decimated in windows
    ]
    return f'{{"seq":{seq},"series":[{",".join(parts)}]}}'


def _csv_num(x: float) -> str:
    return _num(x).strip('"')


def csv_chunks(batch: ScalarBatch, rows_per_chunk: int = CSV_ROWS_PER_CHUNK) -> Iterator[bytes]:
    """``run,tag,step,wall_time,value`` rows of ``batch`` (no header), ``rows_per_chunk`` rows per chunk.

    Run and tag are quoted as the ``csv`` module does (only when they hold a comma, quote or
    newline); lines end with ``\\n``.
    """
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([batch.run, batch.tag, ""])
    prefix = out.getvalue()  # 'run,tag,' quoted as needed
    for start in range(0, len(batch), rows_per_chunk):
        end = start + rows_per_chunk
        steps, times, values = batch.steps[start:end], batch.wall_times[start:end], batch.values[start:end]
        rows = zip(steps, times, values, strict=True)
        if _finite(values) and _finite(times):
            text = "".join([f"{prefix}{s},{w!r},{v!r}\n" for s, w, v in rows])
        else:
            text = "".join([f"{prefix}{s},{_csv_num(w)},{_csv_num(v)}\n" for s, w, v in rows])
        yield text.encode()

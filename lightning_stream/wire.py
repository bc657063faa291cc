"""What goes on the wire, per route and frame; with ``encoding.py`` (its JSON primitives) the wire layer.

Stream payloads (:func:`payload_json`: ``points`` or ``columns`` scalars, status, reset), their
WebSocket envelope (:func:`ws_json`), the REST rows (:func:`points_rows_json`), the bodies of
``/api/series`` (JSON and CSV) and the per-filter :class:`FrameCache` of the fan-out. Payloads are
cached on the hub's message (``Message.memo``), so each (filter, format) is encoded once per
broadcast, and never for a message nobody reads.

Series are held as typed arrays (``series.py``), so a body is built per column,
never per point: ``array.tolist()`` makes the numbers in one C loop and one
``orjson`` call writes the whole body (``encoding.py``: ``dumps``, the column writer shared
by ``format=columns`` frames and ``/api/series``, the points and rows writers). Each body
lives in one function here (:func:`payload_json`, :func:`series_json_chunks`, :func:`csv_chunks`).

Non-finite floats follow the rule of every other route (``encoding.py``): JSON has no
NaN or ±inf, so they are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
CSV writes the same three words unquoted, which ``float()``, ``pandas.read_csv``
and spreadsheets read as numbers.
"""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from lightning_stream.encoding import (
    all_finite,
    columns_json,
    dumps,
    number_text,
    points_json,
    rows_json,
    series_json,
)
from lightning_stream.hub import Message, Subscription, View
from lightning_stream.scalars import ScalarBatch
from lightning_stream.series import Window

__all__ = [
    "CSV_HEADER",
    "CSV_ROWS_PER_CHUNK",
    "SERIES_CHUNK_BYTES",
    "FrameCache",
    "csv_chunks",
    "payload_json",
    "points_rows_json",
    "series_json_chunks",
    "ws_json",
]

CSV_HEADER = b"run,tag,step,wall_time,value\n"
#: rows per chunk of a streamed CSV (~50 bytes each): what one write holds in memory
CSV_ROWS_PER_CHUNK = 4096
#: bytes of series entries gathered into one chunk of an ``/api/series`` JSON body (whole series)
SERIES_CHUNK_BYTES = 256 * 1024


def _encode_points(batches: Iterable[ScalarBatch]) -> str:
    return points_json(batches).decode()


def _encode_columns(batches: Iterable[ScalarBatch]) -> str:
    return columns_json(batches).decode()


_ENCODERS = {"points": _encode_points, "columns": _encode_columns}


def points_rows_json(batch: ScalarBatch) -> str:
    """``[[step, wall_time, value], ...]`` as JSON text (REST ``points``), non-finite as strings."""
    return rows_json(batch).decode()


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
        return dumps(view.payload).decode()  # finite: publish_status checked
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


def series_json_chunks(seq: int, windows: Iterable[Window], chunk_bytes: int = SERIES_CHUNK_BYTES) -> Iterator[bytes]:
    """``{"seq": N, "series": [{"run","tag","steps","wall_times","values","decimated"}, ...]}`` (compact)
    in pieces of whole series (as many as reach ``chunk_bytes``; a big series alone), encoded when asked
    for: a server writing them one by one never holds a million-point body (~42 MB) and its Python
    numbers (~100 MB) at once, and a logdir of many short series is not sent in thousands of tiny writes."""
    parts = [b'{"seq":%d,"series":[' % seq]
    size = 0
    for i, (batch, decimated) in enumerate(windows):
        if i:
            parts.append(b",")
        entry = series_json(batch, decimated=decimated)
        parts.append(entry)
        size += len(entry)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]}")
    yield b"".join(parts)


def _csv_num(x: float) -> str:
    return number_text(x).strip('"')


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
        if all_finite(values) and all_finite(times):
            text = "".join([f"{prefix}{s},{w!r},{v!r}\n" for s, w, v in rows])
        else:
            text = "".join([f"{prefix}{s},{_csv_num(w)},{_csv_num(v)}\n" for s, w, v in rows])
        yield text.encode()

"""Encoders of columnar bodies: the JSON of ``/api/series`` and its CSV rows.

Series are held as typed arrays (``series.py``), so a body is built per column,
never per point: ``array.tolist()`` makes the numbers in one C loop and one
``orjson`` call writes the whole body (``encoding.py``, the column writer shared with
the ``format=columns`` stream payloads the hub encodes and caches per message). Each
encoding lives in one function (:func:`series_json_chunks`, :func:`csv_chunks`).

Non-finite floats follow the rule of every other route (``hub.py``): JSON has no
NaN or ±inf, so they are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
CSV writes the same three words unquoted, which ``float()``, ``pandas.read_csv``
and spreadsheets read as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from lightning_stream.encoding import all_finite, dumps, number_text, series_columns
from lightning_stream.scalars import ScalarBatch
from lightning_stream.series import Window

__all__ = ["CSV_HEADER", "CSV_ROWS_PER_CHUNK", "csv_chunks", "series_json_chunks"]

CSV_HEADER = b"run,tag,step,wall_time,value\n"
#: rows per chunk of a streamed CSV (~50 bytes each): what one write holds in memory
CSV_ROWS_PER_CHUNK = 4096


def series_json_chunks(seq: int, windows: Iterable[Window]) -> Iterator[bytes]:
    """``{"seq": N, "series": [{"run","tag","steps","wall_times","values","decimated"}, ...]}`` (compact)
    in pieces, one series each, encoded when asked for: a server writing them one by one never holds a
    million-point body (~42 MB) and its Python numbers (~100 MB) at once."""
    yield b'{"seq":%d,"series":[' % seq
    for i, (batch, decimated) in enumerate(windows):
        if i:
            yield b","
        yield dumps(series_columns(batch, decimated=decimated))
    yield b"]}"


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

"""TFRecord framing: checksums agree with TensorBoard's, headers are found and validated."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from eventfiles import records, simple_event
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c

from lightning_stream.tfrecord import HEADER_SIZE, find_header, frame, masked_crc32c, parse_header

try:
    from lightning_stream import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000])
def test_masked_crc32c_matches_tensorboard(size: int) -> None:
    data = os.urandom(size)
    assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


@pytest.mark.skipif(_speedups is None, reason="C decoder not built")
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000])
def test_c_masked_crc32c_matches_python(size: int) -> None:
    data = os.urandom(size)
    assert _speedups.masked_crc32c(data) == masked_crc32c(data)


def test_framed_records_are_read_by_tensorboard(tmp_path: Path) -> None:
    payloads = [simple_event("a", i, 1.0, float(i)) for i in range(3)] + [b"", b"x" * 300]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(frame(p) for p in payloads))
    assert list(RawEventFileLoader(str(path)).Load()) == payloads


def test_parse_header_waits_for_twelve_bytes_and_checks_the_length_crc() -> None:
    data = frame(b"hello")
    assert parse_header(data[:11], 0) is None
    header = parse_header(data, 0)
    assert header is not None
    assert (header.length, header.valid) == (5, True)
    corrupt = struct.pack("<Q", 6) + data[8:]
    header = parse_header(corrupt, 0)
    assert header is not None
    assert header.valid is False


def test_find_header_skips_garbage_to_the_next_record() -> None:
    data = b"\x01" * 37 + records([b"payload"])
    assert find_header(data, 0) == 37


def test_find_header_stops_before_an_incomplete_header() -> None:
    data = b"\x01" * 20 + frame(b"payload")[: HEADER_SIZE - 1]
    assert find_header(data, 0) == len(data) - HEADER_SIZE + 1

"""TFRecord framing, the container of TensorBoard event files.

Each record is::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

The length has its own checksum, which is what lets a reader tell a record that is still being
written (too few bytes yet: wait) from garbage (header checksum wrong: resynchronise by searching
for the next offset whose 12 bytes form a valid header).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER_SIZE = 12
"""Bytes before the data: length (8) and its masked CRC (4)."""
FOOTER_SIZE = 4
"""Bytes after the data: its masked CRC."""
FRAMING_SIZE = HEADER_SIZE + FOOTER_SIZE

MAX_READ_RECORD = 16 * 1024 * 1024
"""Records longer than this (graphs, big images) are stepped over without being read into memory:
no scalar record comes near it, and it bounds what one garbage-but-checksummed length can cost."""

MAX_PLAUSIBLE_RECORD = 1 << 32
"""A length above this is garbage even when its checksum happens to match (1 in 2**32 for random
bytes): no TensorBoard writer produces a 4 GiB record. The reader resynchronises past it instead
of waiting forever for the file to grow that much."""

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of ``data``, rotated and offset as TFRecord stores it (so CRCs of CRCs stay strong)."""
    from crc32c import crc32c  # at first use: a server whose C decoder checks CRCs never imports it (~15 ms)

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One complete record holding ``data`` (what a writer appends)."""
    length = _U64.pack(len(data))
    return length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data))


class Header(NamedTuple):
    length: int
    valid: bool


def parse_header(buf: bytes | bytearray | memoryview, pos: int) -> Header | None:
    """The record header at ``pos``, or ``None`` when fewer than 12 bytes are there yet."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    length, crc = _HEADER.unpack_from(buf, pos)
    return Header(length, masked_crc32c(memoryview(buf)[pos : pos + 8]) == crc)


def find_header(buf: bytes | bytearray | memoryview, start: int) -> int:
    """First offset >= ``start`` holding a header whose checksum is valid, or the first offset whose
    12 bytes are not all there yet (so a header being written is not searched past)."""
    last = len(buf) - HEADER_SIZE
    view = memoryview(buf)
    pos = start
    while pos <= last:
        crc = _U32.unpack_from(buf, pos + 8)[0]
        if masked_crc32c(view[pos : pos + 8]) == crc:
            return pos
        pos += 1
    return max(start, last + 1)

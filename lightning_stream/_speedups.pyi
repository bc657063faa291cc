"""Type stub of the optional C decoder (see ``_speedups.c`` and ``reader.decode_records_py``)."""

from array import array

def decode(
    buf: bytes, pos: int, scalar_tags: set[str], resync: bool, /
) -> tuple[int, int, bool, int, dict[str, tuple[array[int], array[float], array[float]]], list[tuple[str, int]]]: ...
def step_breaks(steps: array[int], /) -> list[int]: ...

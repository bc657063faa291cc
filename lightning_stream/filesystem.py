"""File access behind a small interface, so the reader can later tail remote logdirs (fsspec).

The reader and the watcher only ever need four things: find event files under a root, stat one
(size and identity), read a byte range, and know whether a root exists. ``LocalFileSystem`` does
that with plain ``os`` calls; a remote implementation would map ``identity`` to an ETag or
generation number, which is how it detects a replaced file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

EVENT_FILE_MARKER = "tfevents"
"""TensorBoard treats any file whose name contains this as an event file."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the reader needs to know about a file between two reads."""

    size: int
    identity: tuple[int, ...]
    """Changes when the path now names another file (replaced, re-created): (st_dev, st_ino) locally."""
    mtime_ns: int


@runtime_checkable
class FileSystem(Protocol):
    """The file operations the reader and watcher use; paths are strings in the filesystem's syntax."""

    def exists(self, path: str) -> bool: ...

    def list_event_files(self, root: str) -> list[str]:
        """Every file under ``root`` (recursively) whose name contains ``tfevents``, sorted."""
        ...

    def stat(self, path: str) -> FileStat | None:
        """Size and identity of ``path``, or ``None`` when it does not exist (any more)."""
        ...

    def read(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at end of file; ``b""`` if the file is gone)."""
        ...


class LocalFileSystem:
    """The local disk, through ``os``; safe to call from several threads."""

    def exists(self, path: str) -> bool:
        return os.path.isdir(path) or os.path.isfile(path)

    def list_event_files(self, root: str) -> list[str]:
        found: list[str] = []
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=True):
                                stack.append(entry.path)
                            elif EVENT_FILE_MARKER in entry.name and entry.is_file(follow_symlinks=True):
                                found.append(entry.path)
                        except OSError:  # vanished or unreadable while listing: the next scan will tell
                            continue
            except OSError:
                continue
        found.sort()
        return found

    def stat(self, path: str) -> FileStat | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return FileStat(size=st.st_size, identity=(st.st_dev, st.st_ino), mtime_ns=st.st_mtime_ns)

    def read(self, path: str, offset: int, size: int) -> bytes:
        try:
            with io.FileIO(path, "rb") as f:
                f.seek(offset)
                return _read_exactly(f, size)
        except OSError:
            return b""


def _read_exactly(f: io.FileIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads (network filesystems may return fewer)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = f.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


DEFAULT_FILESYSTEM = LocalFileSystem()

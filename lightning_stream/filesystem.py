"""File access behind a small interface, so the reader can later tail remote logdirs (fsspec).

The reader and the watcher only ever need three things: find event files under a root, stat one
(size and identity), and read a byte range. ``LocalFileSystem`` does
that with plain ``os`` calls; a remote implementation would map ``identity`` to an ETag or
generation number, which is how it detects a replaced file.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)

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

    def list_event_files(self, root: str) -> list[str]:
        found: list[str] = []
        _walk(root, found)
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
        except PermissionError as exc:
            _warn_unreadable(path, exc)
            return b""
        except OSError:
            return b""


def walk_dirs(root: str) -> list[str]:
    """``root`` and every directory below it, following symlinks (runs are often linked in) but
    each directory once, so a symlink cycle cannot make a scan endless."""
    return _walk(root, None)


def _walk(root: str, event_files: list[str] | None) -> list[str]:
    """``walk_dirs``, also appending every event file met to ``event_files`` (one pass over the tree)."""
    seen: set[tuple[int, int]] = set()
    directories: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        directories.append(directory)
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=True):
                            stack.append(entry.path)
                        elif event_files is not None and EVENT_FILE_MARKER in entry.name and entry.is_file():
                            event_files.append(entry.path)
                    except OSError:  # vanished or unreadable while listing: the next scan will tell
                        continue
        except PermissionError as exc:
            _warn_unreadable(directory, exc)
        except OSError:
            continue
    return directories


_unreadable: set[str] = set()


def _warn_unreadable(path: str, exc: OSError) -> None:
    """One warning per path and process: a run nobody can read should not vanish silently."""
    if path not in _unreadable:
        _unreadable.add(path)
        logger.warning(
            "cannot read %s (%s); its scalars are skipped until this user may read it (check its owner and mode)",
            path,
            exc.strerror or exc,
        )


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

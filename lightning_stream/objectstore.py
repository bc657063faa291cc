"""Logdirs on object storage (``s3://``, ``gs://``, ``memory://``, any fsspec URL) behind ``FileSystem``.

Object stores do not append: a writer that flushes rewrites the whole object (TensorBoard's S3 support
does exactly that). So a file's *identity* here is its URL alone, never its ETag or generation, which
change on every flush: the reader continues from its offset after a rewrite that only added bytes,
and notices one that changed what it had already read by re-checking the 4 bytes before that offset
(the last record's checksum), or a shorter object by its size. Both then restart the file.

Cost per poll is one listing of the logdir (``find``): it gives every event file's size, so no
per-file ``HEAD`` is needed; a file that grew costs one ranged ``GET`` from the last offset.
Credentials come the usual fsspec way (environment, profiles, instance metadata) or through
``storage_options``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lightning_stream.filesystem import EVENT_FILE_MARKER, FileStat

__all__ = ["EXTRAS", "FsspecFileSystem", "is_url", "open_url"]

EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
}
"""URL scheme → (module fsspec needs for it, the lightning-stream extra that installs it)."""

_REMOTE_IDENTITY: tuple[int, ...] = ()
"""Every remote file has the same identity: a rewrite is told apart by its bytes, not its ETag."""


def is_url(logdir: object) -> bool:
    """Whether ``logdir`` is an fsspec URL (``scheme://...``) rather than a local path."""
    if not isinstance(logdir, str):
        return False
    scheme, sep, _ = logdir.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def open_url(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[FsspecFileSystem, str]:
    """The filesystem behind ``url`` and the canonical URL of its root (no trailing ``/``).

    Raises ``ImportError`` saying which extra to install when the scheme's package is missing, and
    ``ValueError`` for a scheme fsspec does not know.
    """
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - fsspec comes with every extra
        raise ImportError(f"{url!r} needs fsspec: pip install 'lightning-stream[s3]' (or [gcs])") from None
    scheme = url.partition("://")[0].lower()
    needed = EXTRAS.get(scheme)
    if needed is not None:
        module, extra = needed
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(f"{scheme}:// needs {module}: pip install 'lightning-stream[{extra}]'") from None
    try:
        fs = fsspec.filesystem(scheme, **dict(storage_options or {}))
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ValueError(f"cannot open {url!r}: {exc}") from None
    except ImportError as exc:  # a protocol fsspec knows whose package is missing
        raise ImportError(f"{scheme}:// needs an extra package: {exc}") from None
    remote = FsspecFileSystem(fs)
    return remote, remote.canonical(url)


class FsspecFileSystem:
    """``FileSystem`` over an ``fsspec.AbstractFileSystem``; paths are full URLs (``s3://bucket/key``).

    Safe to call from several threads: the listing cache is guarded by a lock.
    """

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        protocol = fs.protocol
        self.protocol: str = protocol if isinstance(protocol, str) else protocol[0]
        self._lock = threading.Lock()
        self._listed: dict[str, FileStat] = {}
        """Stats from the latest listing, each handed out once (the scan right after the listing)."""

    def canonical(self, url: str) -> str:
        """``url`` in the form this filesystem's paths take, without a trailing ``/``."""
        return self._url(self.fs._strip_protocol(url).rstrip("/") or self.fs.root_marker)

    def _url(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def _path(self, url: str) -> str:
        return str(self.fs._strip_protocol(url))

    def list_event_files(self, root: str) -> list[str]:
        """Every event file under ``root`` (one recursive listing), remembering their sizes for ``stat``."""
        path = self._path(root)
        self.fs.invalidate_cache(path)  # s3fs/gcsfs cache listings; a stale one would hide growth
        try:
            found = self.fs.find(path, withdirs=False, detail=True)
        except (FileNotFoundError, PermissionError):
            found = {}
        stats: dict[str, FileStat] = {}
        for name, info in found.items():
            if EVENT_FILE_MARKER in name.rpartition("/")[2] and info.get("type", "file") == "file":
                stats[self._url(name)] = _stat_of(info)
        with self._lock:
            self._listed = stats
        return sorted(stats)

    def stat(self, path: str) -> FileStat | None:
        with self._lock:
            listed = self._listed.pop(path, None)
        if listed is not None:
            return listed
        try:
            self.fs.invalidate_cache(self._path(path))
            info = self.fs.info(self._path(path))
        except (FileNotFoundError, PermissionError):
            return None
        return _stat_of(info) if info.get("type", "file") == "file" else None

    def read(self, path: str, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            data = self.fs.cat_file(self._path(path), start=offset, end=offset + size)
        except (FileNotFoundError, PermissionError):
            return b""
        except OSError as exc:
            # A range past the end of an object that just shrank (HTTP 416): the next stat tells.
            if "416" in str(exc) or "InvalidRange" in str(exc):
                return b""
            raise
        return bytes(data)


def _stat_of(info: Mapping[str, Any]) -> FileStat:
    size = int(info.get("size") or info.get("Size") or 0)
    return FileStat(size=size, identity=_REMOTE_IDENTITY, mtime_ns=_mtime_ns(info))


def _mtime_ns(info: Mapping[str, Any]) -> int:
    """Modification time from whichever key the backend uses (s3fs ``LastModified``, gcsfs ``updated``...)."""
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return 0

"""Linux inotify through ctypes: wake an asyncio loop the moment an event file under a tree changes.

Why not only ``watchfiles``: its Rust loop wakes every ``step`` ms to check for changes and for its
stop event (taking the GIL each time), so a 5 ms step (latency ~10 ms) costs ~0.5 % of a core while
idle. An inotify descriptor registered with ``loop.add_reader`` costs nothing while idle and wakes
the loop within a millisecond (see ``benchmarks/bench_watch_idle.py``).

Only wake-ups come from here; what changed is always found by the watcher's scan, so a lost
event (queue overflow, a directory created and filled before its watch was added) delays a
point until the next scan at worst, never loses it. Limits: Linux only; one watch per directory,
bounded by ``fs.inotify.max_user_watches`` (``start`` raises ``OSError`` when it is reached, and
the watcher then polls); remote writes on network filesystems are not seen (the poll is).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable, Iterable

from lightning_stream.filesystem import walk_dirs

__all__ = ["TreeWatch", "available"]

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
_QUIET_MASK = _MASK & ~(IN_MODIFY | IN_CLOSE_WRITE)
"""A busy directory's mask while the watcher sleeps out its read gap (``TreeWatch.pause``): no event per write."""
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            _libc = libc
        except (OSError, AttributeError):
            return None
    return _libc


def available() -> bool:
    """Whether this platform has inotify (Linux with a libc exporting it)."""
    return os.name == "posix" and os.uname().sysname == "Linux" and _load_libc() is not None


class TreeWatch:
    """Calls ``on_change`` (on the loop) whenever files whose names contain ``marker`` change under
    ``root``, with their paths, or with ``None`` when a directory appeared or went, or events were
    lost (then everything must be looked at); ``on_root_gone`` once ``root`` itself is removed."""

    def __init__(
        self,
        root: str,
        on_change: Callable[[set[str] | None], None],
        *,
        marker: str = "tfevents",
        on_root_gone: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self._on_change = on_change
        self._on_root_gone = on_root_gone
        self._marker = marker.encode()
        self._fd = -1
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}  # the reverse of _dirs
        self._quiet: set[str] = set()  # directories on _QUIET_MASK until resume()
        self._root_wd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = False
        self.degraded = False
        """True once a directory could not be watched (watch limit): some changes only the poll sees."""

    def open(self) -> None:
        """Watch ``root`` and every directory below it (blocking: walks the tree, so call it from a
        worker thread); raises ``OSError`` when inotify cannot be used."""
        libc = _load_libc()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1 failed: {os.strerror(err)}")
        self._fd = fd
        try:
            self._add_tree(self.root, strict=True)
        except BaseException:
            self.close()
            raise

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start delivering ``on_change`` calls on ``loop`` (call it on that loop, after ``open``)."""
        loop.add_reader(self._fd, self._on_readable)
        self._loop = loop
        self._paused = False

    def pause(self, quiet: Iterable[str] = ()) -> None:
        """Stop waking the loop; events queue in the kernel until ``resume``.

        The directories of the files ``quiet`` (a busy run's, just read) report no writes meanwhile:
        the kernel makes every event in the *writer's* ``write``/``close``, ~1 µs each, so a
        training step of two records (TensorBoard's writer opens, appends and closes per record:
        4 events) paid ~4 µs for events nobody reads before the gap ends. ``resume`` restores their watches,
        then reports every event file in them as changed, so nothing written meanwhile is missed.
        """
        if self._loop is None or self._paused:
            return
        self._loop.remove_reader(self._fd)
        self._paused = True
        for directory in {os.path.dirname(path) for path in quiet}:
            if directory in self._wds and self._watch(directory, _QUIET_MASK):
                self._quiet.add(directory)

    def resume(self) -> None:
        """Deliver what queued while paused (synchronously), then wake the loop again."""
        if self._loop is None or not self._paused:
            return
        self._paused = False
        quiet, self._quiet = self._quiet, set()
        full = False
        for directory in quiet:
            full |= not self._watch(directory, _MASK)  # first: a write from now on is an event again
        changed: set[str] = set()
        for directory in quiet:  # then: what was written while it was quiet
            try:
                with os.scandir(directory) as entries:
                    changed.update(e.path for e in entries if self._marker in os.fsencode(e.name))
            except OSError:
                full = True  # gone or unreadable: the scan finds out what happened
        self._loop.add_reader(self._fd, self._on_readable)
        self._on_readable(changed, full=full)

    @property
    def alive(self) -> bool:
        """False once the root itself was deleted or moved away (its watch is gone)."""
        return self._fd >= 0 and self._root_wd in self._dirs

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        os.close(self._fd)
        self._fd = -1
        self._dirs.clear()
        self._wds.clear()
        self._quiet.clear()

    def _add_tree(self, top: str, *, strict: bool) -> None:
        for directory in walk_dirs(top):
            self._add(directory, strict=strict and directory == top)

    def _watch(self, directory: str, mask: int) -> bool:
        """Set the mask of a watched directory's watch; False when the directory is gone or was
        replaced (a new directory at that path gets its own full watch; the caller should rescan)."""
        assert _libc is not None
        wd = int(_libc.inotify_add_watch(self._fd, os.fsencode(directory), mask | IN_ONLYDIR))
        if wd < 0 or wd == self._wds.get(directory):
            return wd >= 0
        if mask != _MASK:
            _libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK | IN_ONLYDIR)
        self._dirs[wd] = directory
        self._wds[directory] = wd
        return False

    def _add(self, directory: str, *, strict: bool) -> None:
        assert _libc is not None
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK | IN_ONLYDIR)
        if wd >= 0:
            self._dirs[wd] = directory
            self._wds[directory] = wd
            if directory == self.root:
                self._root_wd = wd
            return
        err = ctypes.get_errno()
        if err == errno.ENOSPC:
            message = (
                f"inotify watch limit reached at {directory!r}; raise fs.inotify.max_user_watches "
                "(sysctl) for instant updates there, polling meanwhile"
            )
            if strict:
                raise OSError(err, message)
            if not self.degraded:
                log.warning(message)
            self.degraded = True
        elif strict:
            raise OSError(err, f"cannot watch {directory!r}: {os.strerror(err)}")
        # Otherwise the directory vanished or is unreadable: nothing to watch there.

    def _on_readable(self, changed: set[str] | None = None, *, full: bool = False) -> None:
        changed = set() if changed is None else changed
        seen: set[bytes] = set()  # a busy file queues one identical IN_MODIFY per write: handle each once
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                return
            if not data:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                end = pos + _EVENT.size + length
                event = data[pos:end]
                if event in seen:
                    pos = end
                    continue
                seen.add(event)
                name = data[pos + _EVENT.size : end].rstrip(b"\0")
                pos = end
                if mask & IN_Q_OVERFLOW:
                    full = True  # events were dropped: let a full scan find out what changed
                elif mask & IN_IGNORED:
                    gone = self._dirs.pop(wd, None)
                    if gone is not None and self._wds.get(gone) == wd:
                        del self._wds[gone]
                    full = True
                    if wd == self._root_wd and self._on_root_gone is not None:
                        self._on_root_gone()
                elif mask & IN_ISDIR:
                    full = True
                    parent = self._dirs.get(wd)
                    if parent is not None and mask & (IN_CREATE | IN_MOVED_TO):
                        self._add_tree(os.path.join(parent, os.fsdecode(name)), strict=False)
                elif self._marker in name:
                    directory = self._dirs.get(wd)
                    if directory is None:
                        full = True
                    elif mask & (IN_MODIFY | IN_CLOSE_WRITE):
                        changed.add(os.path.join(directory, os.fsdecode(name)))
                    else:  # created, deleted, moved: the file list changed
                        full = True
                elif mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    full = True
        if full:
            self._on_change(None)
        elif changed:
            self._on_change(changed)

"""The watched logdirs of one serving loop: a watcher each, nested logdirs read once.

Loop-confined (every method on the server loop, but ``skip``/``adopt`` callbacks, which a
scan's worker thread calls; see ``_left_to_inner_watch``). Each watcher feeds the hub through
a sink that notes new runs and hparams, then ingests (``coalesced``: a watcher read goes out
at once).

Nested logdirs (``%lightning_stream lightning_logs``, then a ``StreamCallback`` watching
``lightning_logs/version_0``): one directory is one run, whatever watches see it. A watch
inside an already watched logdir starts no watcher: its runs keep the outer watch's names
(``watch()`` returns the name of its root). A watch *around* earlier ones leaves their
directories to them while they are watched. An unwatched logdir's runs keep their names and
read offsets for the next watcher of their directories (``LogdirWatcher.retire``/``adopt``),
so a run is neither renamed nor sent twice. Directories are compared resolved (symlinks followed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lightning_stream.hub import Hub
from lightning_stream.scalars import ScalarBatch

if TYPE_CHECKING:
    from lightning_stream.firstread import Read
    from lightning_stream.watcher import LogdirWatcher, Retired

logger = logging.getLogger(__name__)

WATCH_STOP_TIMEOUT_S = 2.0  # a cancelled logdir watcher gets this long to end
FINAL_SCAN_TIMEOUT_S = 5.0  # unwatch reads what was flushed last, for at most this long
READER_ERROR_KINDS = ("crc_errors", "bad_lengths", "parse_errors")


class LogdirWatches:
    """The watchers of one hub, keyed by logdir; see the module docstring.

    Args:
        hub: where their points go.
        poll_interval_s: the watchers' safety poll.
        wanted: the server's watched logdirs (logdir -> prefix): an inner logdir an outer
            watch read until it was unwatched gets its own watcher again.
    """

    def __init__(self, hub: Hub, *, poll_interval_s: float, wanted: Callable[[], Mapping[str, str | None]]) -> None:
        self.hub = hub
        self._poll_interval_s = poll_interval_s
        self._wanted = wanted
        self.watches: dict[str, tuple[LogdirWatcher, asyncio.Task[None], Callable[[list[ScalarBatch]], None]]] = {}
        self.aliases: dict[str, str] = {}
        """A watched logdir inside another watcher's -> that watcher's path (it reads the files)."""
        self.retired: dict[str, Retired] = {}
        """Run directories (resolved) of stopped watchers -> run name and readers, for the next watcher."""

    def reader_errors(self) -> dict[str, int]:
        """Reader errors by kind, summed over the watchers."""
        return _reader_errors(self)

    async def close(self) -> None:
        """Stop every watcher (no final read: the server is going away)."""
        for path in list(self.watches):
            await self.unwatch(path, final_scan=False)

    async def watch(self, path: str, prefix: str | None) -> str:
        """Watch ``path`` (its first scan read before this returns); the run name of ``path``."""
        from lightning_stream import firstread
        from lightning_stream.watcher import LogdirWatcher  # lazily: the reader's imports are not light

        hub = self.hub
        started = firstread.take(path, prefix=prefix, poll_interval_s=self._poll_interval_s)
        owner = _covering_watch(self, path)
        if owner is not None:  # already read by an outer watch: one directory, one run
            self.aliases[path] = owner
            return _name_in(self.watches[owner][0], path, owner)
        local = not _is_url(path)
        skip = functools.partial(_left_to_inner_watch, self, path) if local else None
        adopt = functools.partial(_adopt_retired, self) if local else None
        early = await self._first_read(started, path) if started is not None and local else None
        if early is not None:  # read before this server existed (the CLI): the same watcher, the same points
            watcher, first = early
            watcher.nest(skip=skip, adopt=adopt)
        else:
            watcher = LogdirWatcher(path, prefix=prefix, poll_interval_s=self._poll_interval_s, skip=skip, adopt=adopt)
            first = await asyncio.to_thread(watcher.scan)
        noted: set[str] = set()

        def sink(batches: list[ScalarBatch]) -> None:
            for run, directory in watcher.runs().items():
                if run not in noted:
                    noted.add(run)
                    hub.note_run(run, directory)
            for run, hparams in watcher.take_hparams().items():
                hub.note_hparams(run, hparams)
            hub.ingest(batches, coalesced=True)

        sink(first)
        task = asyncio.get_running_loop().create_task(
            watcher.watch(sink, max_busy_gap_s=hub.broadcast_gap_s), name=f"lightning-stream-watch {path}"
        )
        task.add_done_callback(_log_watch_end)
        self.watches[path] = (watcher, task, sink)
        return watcher.run_name(watcher.logdir)

    async def _first_read(self, started: concurrent.futures.Future[Read], path: str) -> Read | None:
        """The read ``firstread.start`` began for ``path``, if it is what a scan here would read now.

        It skipped no directory and adopted no reader: so only while no other watched logdir lies
        inside ``path`` and no stopped watcher left readers behind. A failed read is scanned again.
        """
        if self.retired or any(_inside(_real(other), _real(path)) for other in self.watches):
            return None
        try:
            return await asyncio.wrap_future(started)
        except Exception as error:
            logger.debug("the first read of %s, started early, failed (%s); reading it again", path, error)
            return None

    async def unwatch(self, path: str, *, final_scan: bool = True) -> None:
        """Stop watching ``path``; with ``final_scan`` read what was flushed last and hand its runs on."""
        owner = self.aliases.pop(path, None)
        if owner is not None:  # the outer watch reads it: read what was flushed last, for the caller
            if final_scan and owner in self.watches:
                watcher, _, sink = self.watches[owner]
                await self._final_scan(owner, watcher, sink)
            return
        entry = self.watches.pop(path, None)
        if entry is None:
            return
        watcher, task, sink = entry
        if not await cancel_task(task, WATCH_STOP_TIMEOUT_S):
            logger.warning("the watcher of %s did not stop within %.1f s; abandoning it", path, WATCH_STOP_TIMEOUT_S)
            return
        if not final_scan:
            return  # the server is going away: nothing to hand over
        await self._final_scan(path, watcher, sink)
        # Its runs keep their names and offsets for whichever watcher reads their directories next:
        # an outer watch (which skipped them until now), or a later watch() of this logdir.
        for directory, retired in watcher.retire().items():
            self.retired[_real(directory)] = retired
        for alias in [a for a, o in self.aliases.items() if o == path]:
            del self.aliases[alias]  # still watched themselves: they get their own watcher now
            watches = self._wanted()
            if alias in watches:
                await self.watch(alias, watches[alias])

    @staticmethod
    async def _final_scan(path: str, watcher: LogdirWatcher, sink: Callable[[list[ScalarBatch]], None]) -> None:
        """What was flushed just before unwatch (the callback's teardown flush) is read, not dropped."""
        try:
            sink(await asyncio.wait_for(asyncio.to_thread(watcher.scan), FINAL_SCAN_TIMEOUT_S))
        except Exception as error:
            logger.warning("final read of %s failed: %s", path, error)


def _reader_errors(watches: LogdirWatches) -> dict[str, int]:
    totals = dict.fromkeys(READER_ERROR_KINDS, 0)
    for watcher, _, _ in list(watches.watches.values()):
        stats: Any = getattr(watcher, "stats", None)
        items = stats.items() if isinstance(stats, Mapping) else vars(stats).items() if stats is not None else ()
        for kind, value in items:
            if kind in totals and isinstance(value, int):
                totals[kind] += value
    return totals


async def cancel_task(task: asyncio.Task[Any], timeout: float) -> bool:
    """Cancel ``task`` and wait for it, at most ``timeout`` s; True if it ended.

    Cancels more than once: a cancellation that lands inside an anyio shielded scope
    (watchfiles' ``awatch`` waits on its notify thread that way) is swallowed, and the
    next one, after the shield, is not.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        await asyncio.wait({task}, timeout=min(0.05, remaining))
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
    return True


def _log_watch_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a logdir watcher stopped: %r", task.exception(), exc_info=task.exception())


def _is_url(path: str) -> bool:
    from lightning_stream.objectstore import is_url

    return is_url(path)


@functools.lru_cache(maxsize=1024)
def _real(path: str) -> str:
    """``path`` with symlinks resolved (cached: a watched root's answer does not change while watched)."""
    return path if _is_url(path) else os.path.realpath(path)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _name_in(outer: LogdirWatcher, path: str, owner: str) -> str:
    """The run name ``outer`` (watching ``owner``) gives the directory ``path`` inside it."""
    return outer.run_name(os.path.join(outer.logdir, os.path.relpath(_real(path), _real(owner))))


def _adopt_retired(watches: LogdirWatches, directory: str) -> Retired | None:
    """A stopped watcher's name and readers of ``directory``, for the watcher that reads it now."""
    return watches.retired.pop(os.path.realpath(directory), None)


def _covering_watch(watches: LogdirWatches, path: str) -> str | None:
    """The deepest watcher (other than ``path``'s own) whose logdir holds ``path``: it reads its runs."""
    if _is_url(path):
        return None
    real = _real(path)
    holders = [o for o in watches.watches if o != path and not _is_url(o) and _inside(real, _real(o))]
    return max(holders, key=lambda o: len(_real(o)), default=None)


def _left_to_inner_watch(watches: LogdirWatches, path: str, directory: str) -> bool:
    """The watcher of ``path`` skips ``directory`` when a watcher of a logdir inside ``path`` reads it.

    Called from the scan's worker thread: it reads a snapshot of the loop's ``watches`` (``tuple()``
    copies a dict atomically under the GIL), and ``_adopt_retired``'s ``dict.pop`` is atomic too.
    """
    real = os.path.realpath(directory)
    return any(
        other != path and not _is_url(other) and _inside(real, _real(other)) and _inside(_real(other), _real(path))
        for other in tuple(watches.watches)
    )

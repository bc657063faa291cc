"""``StreamCallback``: make a Lightning run's TensorBoard scalars live.

The only module that imports Lightning. On ``setup`` (every stage) global rank
zero acquires the process-wide stream server and watches the log dir of every
``TensorBoardLogger``; on ``teardown`` *and* ``on_exception`` (Lightning calls
only the latter when a run raises, KeyboardInterrupt included) it releases it,
exactly once per acquire.

Latency: Lightning calls ``logger.save()`` (a flush) right after each write, so
a logged scalar is in the event file at once and the watcher picks it up within
milliseconds. Writes that bypass Lightning (``logger.experiment.add_scalar``)
sit in the writer's queue for up to ``flush_secs`` (120 s); the callback
flushes the writers at most every ``flush_interval_s`` from the batch-end hooks.

Training never waits on streaming: hooks only append to a queue
(``StreamServer.publish_status``) or check a clock; the server runs in a child
process (``isolated.py``; ``isolated=False``: a thread of this one); any failure
of the streaming side is logged once and training goes on.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_stream.config import ServerConfig, is_wildcard

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_stream.manager import StreamServerManager
    from lightning_stream.server import StreamServer

log = logging.getLogger(__name__)

_FIX = "Trainer(logger=TensorBoardLogger('lightning_logs'), callbacks=[StreamCallback()])"

_UNUSED_STEP_HOOKS = (
    "on_train_batch_start",
    "on_validation_batch_start",
    "on_test_batch_start",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)
"""Per-step hooks this callback has no use for. Lightning dispatches every hook of every callback,
~1.75 µs each (``benchmarks/bench_hooks.py``), ~10 µs a step for these: most of the 1 %
overhead budget of a fast loop. Set to ``None``, Lightning skips them."""
_FLUSH_HOOKS = ("on_train_batch_end", "on_validation_batch_end", "on_test_batch_end")
"""The per-step hooks that flush writers; skipped too when flushing is off (``flush_interval_s=0``)."""


class StreamCallback(Callback):
    """Stream every scalar the run logs to TensorBoard, live, to a dashboard and clients.

    Args:
        host: address to bind (``LIGHTNING_STREAM_HOST``, else ``127.0.0.1``).
        port: port to bind; ``None`` picks a free one (``LIGHTNING_STREAM_PORT``).
        strict_port: with a fixed busy ``port``, do not fall back to a free one; the
            streaming side then logs the error and the run goes on without it.
        token: bearer token clients must send (required for a non-loopback ``host``).
        flush_interval_s: longest time a scalar may sit in a TensorBoard writer's
            queue before the callback flushes it; ``0`` disables flushing.
        isolated: serve from a child process (default), so reading the event files and
            sending to clients never takes this process's GIL (``benchmarks/bench_overhead.py``);
            ``False`` serves from a thread of the training process (no extra process).
        manager: the ``StreamServerManager`` to acquire from (the process-wide one by default).
        **server_options: further ``ServerConfig`` fields (``memory_budget_bytes``, ...).

    Raises:
        ValueError: for a bad option (checked here, before any training starts).
        MisconfigurationException: at ``setup`` when the trainer has no ``TensorBoardLogger``.

    Example::

        from lightning.pytorch import Trainer
        from lightning_stream import StreamCallback

        trainer = Trainer(max_epochs=3, callbacks=[StreamCallback()])
        trainer.fit(model)  # prints: lightning-stream: live at http://127.0.0.1:PORT/
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        strict_port: bool = False,
        token: str | None = None,
        flush_interval_s: float = 0.1,
        isolated: bool = True,
        manager: StreamServerManager | None = None,
        **server_options: Any,
    ) -> None:
        if isinstance(flush_interval_s, bool) or not isinstance(flush_interval_s, (int, float)) or flush_interval_s < 0:
            raise ValueError(f"flush_interval_s={flush_interval_s!r} must be a number of seconds >= 0 (0 disables)")
        # Validate now (cheap, pure data) so a bad option fails before training starts.
        self._config = ServerConfig.from_env(
            host=host, port=port, strict_port=strict_port, token=token, isolated=isolated, **server_options
        )
        self._flush_interval_s = float(flush_interval_s)
        self._manager = manager
        self._server: StreamServer | None = None
        self._runs: list[str] = []
        self._writers: list[TensorBoardLogger] = []
        self._last_flush = 0.0
        self._announced_url: str | None = None
        if _lightning_skips_unset_hooks():
            for hook in _UNUSED_STEP_HOOKS + (() if self._flush_interval_s else _FLUSH_HOOKS):
                if getattr(type(self), hook) is getattr(StreamCallback, hook):  # a subclass's own hook stays
                    setattr(self, hook, None)

    @property
    def server(self) -> StreamServer | None:
        """The server this callback holds between ``setup`` and ``teardown``, if any."""
        return self._server

    @property
    def runs(self) -> list[str]:
        """Run names (as the server shows them) of the loggers being streamed."""
        return list(self._runs)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Checked on every rank, so that all ranks fail alike instead of diverging into a hang.
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            found = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "none"
            raise MisconfigurationException(
                f"StreamCallback streams what TensorBoardLogger writes, but the trainer's loggers are: {found}. "
                f"Add one: {_FIX}"
            )
        if not trainer.is_global_zero or self._server is not None:
            return
        self._writers = loggers
        try:
            self._server = self._acquire()
            self._runs = []
            for logger in loggers:
                # logger.log_dir (not trainer.log_dir, which broadcasts): rank zero only here.
                run = _run_name(logger)
                self._server.watch(logger.log_dir, prefix=run)
                self._server.publish_status(run, "started", stage=stage)
                self._runs.append(run)
        except Exception as error:  # the streaming side must never kill training
            log.warning(
                "lightning-stream: live streaming is off for this run (%s); training goes on. "
                "Pass port=None to pick a free port, or check `lightning-stream ls`.",
                error,
            )
            self._release()
            return
        if self._server.url != self._announced_url:
            self._announced_url = self._server.url
            rank_zero_info(
                f"lightning-stream: live at {self._server.url} (runs: {', '.join(self._runs)})"
                + _remote_hint(self._server.host, self._server.port)
            )

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_flush()

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._maybe_flush()

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._maybe_flush()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._status("epoch", epoch=trainer.current_epoch, global_step=trainer.global_step)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._server is None:
            return
        self._flush()
        self._unwatch()  # the server reads what was flushed last before "finished" goes out
        self._status("finished", stage=stage)
        self._release()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._server is None:
            return
        self._flush()
        self._unwatch()
        self._status("failed", error=f"{type(exception).__name__}: {exception}"[:500])
        self._release()

    # -- internals -----------------------------------------------------------

    def _acquire(self) -> StreamServer:
        from lightning_stream.manager import get_stream_server_manager

        manager = self._manager if self._manager is not None else get_stream_server_manager()
        self._manager = manager
        return manager.acquire(config=self._config)

    def _release(self) -> None:
        server, self._server = self._server, None
        if server is None or self._manager is None:
            return
        try:
            self._manager.release(server)
        except Exception as error:
            log.warning("lightning-stream: releasing the stream server failed (%s); training is unaffected", error)

    def _unwatch(self) -> None:
        server = self._server
        if server is None:
            return
        for logger in self._writers:
            try:
                server.unwatch(logger.log_dir)
            except Exception as error:
                log.warning(
                    "lightning-stream: unwatching %s failed (%s); training is unaffected", logger.log_dir, error
                )

    def _status(self, state: str, **fields: Any) -> None:
        server = self._server
        if server is None:
            return
        try:
            for run in self._runs:
                server.publish_status(run, state, **fields)
        except Exception as error:
            log.debug("lightning-stream: status %r not published: %s", state, error)

    def _maybe_flush(self) -> None:
        if self._server is None or not self._flush_interval_s:
            return
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval_s:
            self._last_flush = now
            self._flush()

    def _flush(self) -> None:
        for logger in self._writers:
            writer = getattr(logger, "_experiment", None)  # never create the writer just to flush it
            if writer is not None:
                try:
                    writer.flush()
                except Exception as error:
                    log.debug("lightning-stream: flushing %s failed: %s", logger.log_dir, error)


@functools.cache
def _lightning_skips_unset_hooks() -> bool:
    """Whether Lightning's hook dispatch skips a callback attribute that is not callable.

    ``_call_callback_hooks`` does (``if callable(fn)``) in 2.1.0, 2.3.0 and 2.6.6 (read); checked
    on the installed one, so a Lightning without it costs speed, never a crash.
    """
    try:
        from lightning.pytorch.trainer import call

        return "if callable(fn):" in inspect.getsource(call._call_callback_hooks)
    except Exception:  # no source (a frozen app), moved function: keep every hook
        return False


def _run_name(logger: TensorBoardLogger) -> str:
    """``name/version[/sub_dir]``: the log dir relative to ``save_dir``, stable across fits."""
    relative = os.path.relpath(logger.log_dir, logger.save_dir)
    return relative.replace(os.sep, "/") if not relative.startswith("..") else os.path.basename(logger.log_dir)


def _remote_hint(host: str, port: int) -> str:
    """For a wildcard bind, the URL other hosts use (hostname: no DNS lookup, which may hang)."""
    if not is_wildcard(host):
        return ""
    return f"; from other hosts: http://{socket.gethostname()}:{port}/ (send the token)"

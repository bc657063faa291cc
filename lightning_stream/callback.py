"""``StreamCallback``: make a Lightning run's TensorBoard scalars live.

The only module that imports Lightning: ``lightning.pytorch``, or ``pytorch_lightning`` when that
is the one the user imported (``_lightning_package``). On ``setup`` (every stage) global rank
zero acquires the process-wide stream server and watches the log dir of every
``TensorBoardLogger`` (of either package, or Fabric's); on ``teardown`` *and* ``on_exception``
(Lightning calls only the latter when a run raises, KeyboardInterrupt included) it releases it,
exactly once per acquire. A server it launched stays up after that release (``linger_s``), so the
dashboard outlives ``fit`` and the next trainer of the process reuses its URL.

Without a TensorBoard logger nothing fails: the metrics the trainer hands its first logger are
published directly (``_MetricsTap``), and with ``logger=False`` there is nothing to stream; either
way a warning says so once.

Latency: Lightning calls ``logger.save()`` (a flush) right after each write, so
a logged scalar is in the event file at once and the watcher picks it up within
milliseconds. Writes that bypass Lightning (``logger.experiment.add_scalar``)
can sit in the writer's buffer for up to ``flush_secs`` (120 s; tensorboardX's and
TensorFlow's writers buffer, torch's writes through); a thread of the callback's own
(``_Flusher``) flushes the writers every ``flush_interval_s``, so no hook of ours runs
per step and a write is flushed on time even while a long step is still running.

Training never waits on streaming: no hook of ours runs per step, the per-epoch ones only
append to a queue (``StreamServer.publish_status``); the server runs in a child
process (``isolated.py``; ``isolated=False``: a thread of this one); any failure
of the streaming side is logged once and training goes on.

Why one module of this length: it is the only module that knows Lightning (hooks, loggers of both
Lightning packages and Fabric, the logger tap), kept whole on purpose.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from lightning_stream.config import ServerConfig, is_wildcard
from lightning_stream.threads import start_thread


def _lightning_package() -> ModuleType:
    """The Lightning the user imported: ``pytorch_lightning`` if only it is loaded, else ``lightning.pytorch``.

    Both are the same releases under two names with separate class objects; a ``Trainer`` of either
    dispatches to any callback (hooks are looked up by name), but importing the other package would
    load a second copy of Lightning into the user's process. Whichever is installed is the fallback.
    """
    order = ["lightning.pytorch", "pytorch_lightning"]
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        order.reverse()
    for name in order:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "StreamCallback needs Lightning: pip install 'lightning-stream[lightning]' "
        "(or pytorch-lightning); the server, CLI and client work without it"
    )


_pl = _lightning_package()

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger

    from lightning_stream.manager import StreamServerManager
    from lightning_stream.server import StreamServer
else:
    Callback = _pl.Callback
    Logger = Any
rank_zero_info: Callable[[str], None] = _pl.utilities.rank_zero.rank_zero_info

log = logging.getLogger(__name__)

_FIX = "Trainer(logger=TensorBoardLogger('lightning_logs'), callbacks=[StreamCallback()])"

_UNUSED_STEP_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_batch_end",
    "on_test_batch_end",
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
overhead budget of a fast loop. Set to ``None``, Lightning skips them: all of them, since the
writers are flushed from a thread of ours (``_Flusher``), not from the batch-end hooks."""
FLUSHER_STOP_TIMEOUT_S = 5.0
"""How long ``teardown`` waits for a flush in progress on the flusher thread before going on without it."""


class StreamCallback(Callback):
    """Stream every scalar the run logs to TensorBoard, live, to a dashboard and clients.

    Works with ``lightning.pytorch`` and ``pytorch_lightning`` trainers alike. Without a
    ``TensorBoardLogger`` it streams the metrics the trainer hands its first logger instead
    (``CSVLogger``, ``fast_dev_run``'s ``DummyLogger``), and with ``logger=False`` it streams
    nothing: both get a warning, once, never an exception.

    Args:
        host: address to bind (``LIGHTNING_STREAM_HOST``, else ``127.0.0.1``).
        port: port to bind; ``None`` picks a free one (``LIGHTNING_STREAM_PORT``).
        strict_port: with a fixed busy ``port``, do not fall back to a free one; the
            streaming side then logs the error and the run goes on without it.
        token: bearer token clients must send (required for a non-loopback ``host``).
        flush_interval_s: longest time a scalar may sit in a TensorBoard writer's
            queue before the callback flushes it (from a thread of its own, not per step);
            ``0`` disables flushing.
        isolated: serve from a child process (default), so reading the event files and
            sending to clients never takes this process's GIL (``benchmarks/bench_overhead.py``);
            ``False`` serves from a thread of the training process (no extra process).
        linger_s: how long a server this callback *launched* stays up after its last release:
            ``None`` (default) for the rest of the process, so the dashboard outlives ``fit`` and
            later trainers reuse its URL; ``0`` stops it at once. A server someone else acquired
            first keeps that owner's reference counting.
        manager: the ``StreamServerManager`` to acquire from (the process-wide one by default).
        **server_options: further ``ServerConfig`` fields (``memory_budget_bytes``, ...).

    Raises:
        ValueError: for a bad option (checked here, before any training starts).

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
        linger_s: float | None = None,
        manager: StreamServerManager | None = None,
        **server_options: Any,
    ) -> None:
        if isinstance(flush_interval_s, bool) or not isinstance(flush_interval_s, (int, float)) or flush_interval_s < 0:
            raise ValueError(f"flush_interval_s={flush_interval_s!r} must be a number of seconds >= 0 (0 disables)")
        if linger_s is not None and (
            isinstance(linger_s, bool) or not isinstance(linger_s, (int, float)) or not 0 <= linger_s <= 86400
        ):
            raise ValueError(
                f"linger_s={linger_s!r} must be seconds in [0, 86400], or None for the life of the process"
            )
        # Validate now (cheap, pure data) so a bad option fails before training starts.
        self._config = ServerConfig.from_env(
            host=host, port=port, strict_port=strict_port, token=token, isolated=isolated, **server_options
        )
        self._flush_interval_s = float(flush_interval_s)
        self._linger_s = None if linger_s is None else float(linger_s)
        self._manager = manager
        self._server: StreamServer | None = None
        self._runs: list[str] = []
        self._writers: list[Any] = []
        self._tapped: _MetricsTap | None = None
        self._flusher: _Flusher | None = None
        self._announced_url: str | None = None
        if _lightning_skips_unset_hooks():
            for hook in _UNUSED_STEP_HOOKS:
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
        if not trainer.is_global_zero or self._server is not None:
            return
        loggers: list[Any] = [lg for lg in trainer.loggers if is_tensorboard_logger(lg)]
        if not loggers and not trainer.loggers:
            _warn_once(
                "logging-off",
                "lightning-stream: the trainer has no logger (logger=False), so there is nothing to stream; "
                f"training goes on. To watch it live: {_FIX}",
            )
            return
        try:
            self._server = self._acquire()
            self._runs = []
            if loggers:
                self._writers = loggers
                for logger in loggers:
                    # logger.log_dir (not trainer.log_dir, which broadcasts): rank zero only here.
                    # the server's name for it: an outer watched logdir (the notebook magic's) may name it already
                    run = self._server.watch(logger.log_dir, prefix=_run_name(logger))
                    self._runs.append(run)
                if self._flush_interval_s:
                    self._flusher = _Flusher(loggers, self._flush_interval_s)
            else:
                first = trainer.loggers[0]
                run = _fallback_run_name(first)
                _warn_once(
                    f"no-tensorboard {type(first).__name__}",
                    f"lightning-stream: the trainer has no TensorBoardLogger (loggers: "
                    f"{', '.join(type(lg).__name__ for lg in trainer.loggers)}), so the metrics it hands "
                    f"{type(first).__name__} are streamed instead, as run {run!r}. For everything written "
                    f"to TensorBoard event files: {_FIX}",
                )
                self._tapped = _MetricsTap(first, self._server, run)
                self._runs.append(run)
            for run in self._runs:
                self._server.publish_status(run, "started", stage=stage)
        except Exception as error:  # the streaming side must never kill training
            log.warning(
                "lightning-stream: live streaming is off for this run (%s); training goes on. "
                "Pass port=None to pick a free port, or check `lightning-stream ls`.",
                error,
            )
            self._stop_flusher()
            self._unwatch()  # what was watched before the failure: the server may outlive this run
            self._untap()
            self._release()
            return
        if self._server.url != self._announced_url:
            self._announced_url = self._server.url
            rank_zero_info(
                f"lightning-stream: live at {self._server.url} (runs: {', '.join(self._runs)})"
                + _remote_hint(self._server.host, self._server.port)
            )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._status("epoch", epoch=trainer.current_epoch, global_step=trainer.global_step)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._server is None:
            return
        self._stop_flusher()
        _flush(self._writers)
        self._unwatch()  # the server reads what was flushed last before "finished" goes out
        self._untap()
        self._status("finished", stage=stage)
        self._release()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._server is None:
            return
        self._stop_flusher()
        _flush(self._writers)
        self._unwatch()
        self._untap()
        self._status("failed", error=f"{type(exception).__name__}: {exception}"[:500])
        self._release()

    # -- internals -----------------------------------------------------------

    def _acquire(self) -> StreamServer:
        from lightning_stream.manager import get_stream_server_manager

        manager = self._manager if self._manager is not None else get_stream_server_manager()
        self._manager = manager
        # linger_s applies only if this acquire launches the server: one found running keeps its owner's rules
        return manager.acquire_result(config=self._config, linger_s=self._linger_s).server

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
        self._writers = []

    def _untap(self) -> None:
        tapped, self._tapped = self._tapped, None
        if tapped is not None:
            tapped.remove()

    def _status(self, state: str, **fields: Any) -> None:
        server = self._server
        if server is None:
            return
        try:
            for run in self._runs:
                server.publish_status(run, state, **fields)
        except Exception as error:
            log.debug("lightning-stream: status %r not published: %s", state, error)

    def _stop_flusher(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.stop()


class _Flusher:
    """Flushes the loggers' writers every ``interval_s`` from a daemon thread, between ``setup`` and ``teardown``.

    Why a thread and not the batch-end hooks: a hook costs every step ~2 µs of Lightning's dispatch
    plus a clock read on the training thread, and a write made inside a long step waited for the
    step's end. The thread wakes ``1 / interval_s`` times a second whatever the step rate, and
    ``flush()`` is the writers' public, thread-safe call (TensorBoard's, tensorboardX's and
    Fabric's alike take their own lock), so no writer internals are touched. Started at once; it
    ends on its own once every writer is seen to write each record through (torch's on a local
    logdir, Lightning's default): then nothing wakes at all.
    """

    def __init__(self, loggers: list[Any], interval_s: float) -> None:
        self._loggers = loggers
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = start_thread(threading.Thread(target=self._run, name="lightning-stream-flush", daemon=True))

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            if not _flush(self._loggers, periodic=True):
                return  # every writer puts each record in its file at once: nothing to do, ever (no wake-ups)

    def stop(self) -> None:
        """Stop the thread; a flush in progress finishes first (bounded: ``FLUSHER_STOP_TIMEOUT_S``)."""
        self._stopping.set()
        self._thread.join(FLUSHER_STOP_TIMEOUT_S)


def _flush(loggers: list[Any], *, periodic: bool = False) -> bool:
    """Flush the writers these loggers already made; a failure is logged (debug) and never raised.

    ``periodic``: skip the writers that write each record through (``_writes_through``), and say
    whether any writer may still need flushing (one not made yet, or one that buffers). At
    ``teardown`` every writer is flushed: TensorBoard's waits there until its queue is written,
    so the server's last read has every point.
    """
    needed = False
    for logger in loggers:
        writer = getattr(logger, "_experiment", None)  # never create the writer just to flush it
        if writer is None:
            needed = True
            continue
        if periodic and _writes_through(writer):
            continue
        needed = True
        try:
            writer.flush()
        except Exception as error:
            log.debug("lightning-stream: flushing %s failed: %s", logger.log_dir, error)
    return needed


def _writes_through(writer: Any) -> bool:
    """Whether ``writer`` puts each record in its file as it comes, so a periodic flush does nothing.

    torch's ``SummaryWriter`` hands records to TensorBoard's ``EventFileWriter``, whose thread appends
    each one to a local file at once (to a remote one only on ``flush``: it waits in a temporary
    file meanwhile). tensorboardX's writer holds records in a file buffer until flushed.
    """
    log_dir = getattr(writer, "log_dir", None)
    return (
        type(writer).__module__.startswith("torch.utils.tensorboard")
        and isinstance(log_dir, (str, os.PathLike))
        and "://" not in os.fspath(log_dir)
    )


class _MetricsTap:
    """Publishes what the trainer hands one logger's ``log_metrics``: the path without a TensorBoardLogger.

    The tap is an attribute of that logger *instance* (its class and every other logger are untouched),
    calls the original first, and is removed at ``teardown``. Adding a logger of our own instead would
    change what the host sees: ``trainer.logger``, ``trainer.log_dir`` and the checkpoint directory all
    follow the first logger. Cost: one ``publish`` (~2 µs) per metric per logging step.
    """

    def __init__(self, logger: Logger, server: StreamServer, run: str) -> None:
        self._logger = logger
        self._had_own = "log_metrics" in vars(logger)
        self._previous = vars(logger).get("log_metrics")
        original = logger.log_metrics
        publish = server.publish

        def log_metrics(metrics: dict[str, float], step: int | None = None) -> Any:
            result = original(metrics, step)
            try:
                at = 0 if step is None else int(step)
                for tag, value in metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        publish(run, tag, at, float(value))
            except Exception as error:  # the streaming side must never kill training
                log.debug("lightning-stream: metrics of step %r not published: %s", step, error)
            return result

        self._tap = log_metrics
        logger.log_metrics = log_metrics  # type: ignore[method-assign]

    def remove(self) -> None:
        if vars(self._logger).get("log_metrics") is not self._tap:
            return  # replaced by someone else since: leave theirs
        if self._had_own:
            self._logger.log_metrics = self._previous  # type: ignore[method-assign,assignment]
        else:
            del self._logger.log_metrics


_TENSORBOARD_LOGGER_MODULES = ("lightning.fabric.loggers.tensorboard", "lightning_fabric.loggers.tensorboard")
"""Where the TensorBoard loggers of ``lightning`` (pytorch and fabric) and of ``pytorch_lightning`` /
``lightning_fabric`` live: both pytorch loggers subclass their package's fabric one."""


def is_tensorboard_logger(logger: object) -> bool:
    """Whether ``logger`` writes TensorBoard event files: a ``TensorBoardLogger`` of either package.

    Looked up in ``sys.modules`` only: a logger's class is imported by the time it exists, and
    importing the other package would load a second Lightning into the user's process.
    """
    for name in _TENSORBOARD_LOGGER_MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(logger, module.TensorBoardLogger):
            return True
    return False


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Log ``message`` once per process (an HPO loop of many trainers is told once)."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning("%s", message)


@functools.cache
def _lightning_skips_unset_hooks() -> bool:
    """Whether Lightning's hook dispatch skips a callback attribute that is not callable.

    ``_call_callback_hooks`` does (``if callable(fn)``) in 2.1.0, 2.3.0 and 2.6.6 (read); checked
    on the installed one (the package ``StreamCallback`` derives from), so a Lightning without it
    costs speed, never a crash.
    """
    try:
        call = importlib.import_module(f"{_pl.__name__}.trainer.call")
        return "if callable(fn):" in inspect.getsource(call._call_callback_hooks)
    except Exception:  # no source (a frozen app), moved function: keep every hook
        return False


def _run_name(logger: Any) -> str:
    """``name/version[/sub_dir]``: the log dir relative to ``save_dir``, stable across fits.

    (A Fabric ``TensorBoardLogger`` calls that directory ``root_dir``; the pytorch one's ``root_dir``
    is ``save_dir/name``.)
    """
    log_dir = str(logger.log_dir)
    relative = os.path.relpath(log_dir, str(getattr(logger, "save_dir", None) or logger.root_dir))
    return relative.replace(os.sep, "/") if not relative.startswith("..") else os.path.basename(log_dir)


def _fallback_run_name(logger: Any) -> str:
    """The run name for a logger that is not TensorBoard's: ``name/version`` as Lightning spells it."""
    try:
        name, version = str(logger.name or ""), logger.version
    except Exception:
        name, version = "", None
    version = version if isinstance(version, str) else ("" if version is None else f"version_{version}")
    run = "/".join(part for part in (name, version) if part)
    return run or ("fast_dev_run" if type(logger).__name__ == "DummyLogger" else str(type(logger).__name__))


def _remote_hint(host: str, port: int) -> str:
    """For a wildcard bind, the URL other hosts use (hostname: no DNS lookup, which may hang)."""
    if not is_wildcard(host):
        return ""
    return f"; from other hosts: http://{socket.gethostname()}:{port}/ (send the token)"

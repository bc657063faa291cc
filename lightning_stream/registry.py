"""The port registry: one JSON file per live server, so other processes can find it.

Layout (SPEC "Port registry"): a per-user directory, mode 0700 —
``$LIGHTNING_STREAM_REGISTRY_DIR``, else ``$XDG_RUNTIME_DIR/lightning-stream``, else
``~/.cache/lightning-stream/servers`` (``%LOCALAPPDATA%\\lightning-stream\\servers`` on
Windows) — holding ``<pid>-<port>.json`` files, mode 0600. A file is written only after
the port is bound and ``/health`` answers, atomically (temp file, fsync, rename), so a
reader never sees half a file; it is removed on stop, at exit and on SIGTERM.

Readers trust nothing they did not write (SPEC "Port registry", docs/security.md):

* the directory must belong to this user and not be group- or world-writable, else
  ``RegistryError`` says which directory and the fix (``chmod 700 DIR``, or another
  ``LIGHTNING_STREAM_REGISTRY_DIR``); nothing is ever chmod-ed through a symlink;
* an entry counts only if it is a regular file owned by this user, at most
  ``MAX_ENTRY_BYTES``, opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block a
  reader, a symlink to ``/dev/zero`` cannot feed it forever), whose ``url`` is
  ``http://HOST:PORT`` of its own ``host``/``port``; anything else is skipped with one
  warning per file and process;
* every field is type-checked, a file that does not parse is skipped (debug log), and
  ``list_servers()`` prunes entries whose pid is dead or whose ``/health`` does not
  answer with that pid.

That is the difference from TensorBoard's info files (non-atomic, 0777 directory,
never pruned: "Reusing TensorBoard on port 6006" for a server that died long ago).

Limits: a server killed with SIGKILL leaves its file behind until a reader prunes it;
on Windows the mode bits are not enforced (NTFS ACLs of the user profile apply).

Why one module of this length: the trust rules for other processes' files (owner, modes,
``O_NOFOLLOW``, size, url) are most of it, and belong beside the format they guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import stat
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_stream._version import __version__
from lightning_stream.config import ENV_REGISTRY_DIR
from lightning_stream.errors import RegistryError
from lightning_stream.health import HEALTH_TIMEOUT_S, connect_host, probe

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
MAX_ENTRY_BYTES = 64 * 1024
"""Largest registry file read; a real entry is a few hundred bytes plus its logdirs."""
_POSIX = sys.platform != "win32"
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ServerInfo:
    """What the registry knows about one live server (read-only).

    ``url`` is the address a local client should use (a wildcard bind such as
    ``0.0.0.0`` is published with a loopback host); ``token_required`` tells a
    client it must send ``Authorization: Bearer ...`` (the token itself is never
    written to disk).
    """

    pid: int
    host: str
    port: int
    url: str
    version: str = __version__
    started_at: float = field(default_factory=time.time)
    logdirs: tuple[str, ...] = ()
    token_required: bool = False
    hostname: str = field(default_factory=socket.gethostname)
    """The machine the server runs on: a registry on a shared home directory holds entries
    of other nodes, which this machine can neither health-check nor prune."""

    @property
    def local(self) -> bool:
        """Whether the server runs on this machine (entries without a hostname count as local)."""
        return self.hostname in ("", socket.gethostname())

    @property
    def url_matches_address(self) -> bool:
        """Whether ``url`` is ``http(s)://HOST:PORT/...`` of this entry's own ``host`` and ``port``.

        A token is only ever sent to that address, so a ``url`` that points elsewhere
        (another host, another port) disqualifies the entry.
        """
        return url_points_at(self.url, self.host, self.port)

    @property
    def filename(self) -> str:
        return f"{self.pid}-{self.port}{_SUFFIX}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["logdirs"] = list(self.logdirs)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerInfo:
        """Parse and type-check one registry file; ``ValueError`` says which field is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"registry entry must be a JSON object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for name, kinds in _FIELD_TYPES.items():
            if name not in data:
                if name in _OPTIONAL:
                    continue
                raise ValueError(f"registry entry lacks field {name!r}")
            value = data[name]
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise ValueError(
                    f"registry field {name!r} has {value!r}, expected {' or '.join(k.__name__ for k in kinds)}"
                )
            values[name] = value
        logdirs = data.get("logdirs", [])
        if not isinstance(logdirs, list) or not all(isinstance(d, str) for d in logdirs):
            raise ValueError(f"registry field 'logdirs' has {logdirs!r}, expected a list of strings")
        values["logdirs"] = tuple(logdirs)
        values["started_at"] = float(values.get("started_at", 0.0))
        values.setdefault("hostname", "")  # written before hostnames were recorded: assume local
        if not 1 <= values["port"] <= 65535 or values["pid"] <= 0:
            raise ValueError(f"registry entry has pid={values['pid']!r} port={values['port']!r}, out of range")
        info = cls(**values)
        if not info.url_matches_address:
            raise ValueError(f"registry entry's url {info.url!r} is not its own host {info.host!r} port {info.port!r}")
        return info


def url_points_at(url: str, host: str, port: int) -> bool:
    """Whether ``url`` is an ``http(s)`` URL of exactly ``host`` (or its loopback stand-in) and ``port``."""
    try:
        parts = urllib.parse.urlsplit(url)
        url_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.username is not None or parts.password is not None:
        return False
    name = (parts.hostname or "").lower()
    bare = host.strip().strip("[]").lower()
    return url_port == port and name in (bare, connect_host(host).lower())


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "host": (str,),
    "port": (int,),
    "url": (str,),
    "version": (str,),
    "started_at": (int, float),
    "token_required": (bool,),
    "hostname": (str,),
}
_OPTIONAL = frozenset({"version", "started_at", "token_required", "hostname"})


def registry_dir() -> Path:
    """The registry directory for this user (not created; see ``ensure_registry_dir``)."""
    explicit = os.environ.get(ENV_REGISTRY_DIR)
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":  # no XDG; the per-user local app data folder
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "lightning-stream" / "servers"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "lightning-stream"
    return Path.home() / ".cache" / "lightning-stream" / "servers"


def ensure_registry_dir() -> Path:
    """Create the registry directory (0700, missing parents too) if needed, check it, return it.

    Raises:
        RegistryError: the directory cannot be created, is not a directory, or is not
            private to this user (see ``check_registry_dir``).
    """
    path = registry_dir()
    try:
        _make_private_dirs(path)
    except OSError as exc:
        raise RegistryError(
            f"cannot use the port registry directory {str(path)!r}: {exc.strerror or exc}; "
            f"set {ENV_REGISTRY_DIR} to a writable directory, or pass registry=False"
        ) from exc
    check_registry_dir(path)
    return path


def _make_private_dirs(path: Path) -> None:
    """``mkdir -p`` with every directory it creates 0700 whatever the umask.

    The mode is set through a descriptor opened with ``O_NOFOLLOW``, so a symlink
    swapped in after ``mkdir`` is never followed; an existing directory is left as it is
    (``check_registry_dir`` judges it), except that the registry directory itself, when
    it is a real directory of ours that others may read but not write, becomes 0700.
    """
    missing = []
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            break
        missing.append(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # created by a concurrent writer: judged like any existing one
        _chmod_private(directory)
    if _POSIX and not missing:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            readable_only = st.st_mode & 0o077 and not st.st_mode & 0o022  # writable: refused, not mended
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and readable_only:
                _chmod_private(path)


def _chmod_private(directory: Path) -> None:
    if not _POSIX:  # NTFS ACLs of the user profile apply
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def check_registry_dir(path: Path) -> None:
    """Raise ``RegistryError`` unless ``path`` is a directory of this user that no one else can write.

    Another local user who can write there could plant entries (a fake server that
    collects tokens, a FIFO that blocks readers); a one-line error beats trusting it.
    """
    if not _POSIX:
        return
    try:
        st = os.stat(path)  # follows a symlink: ~/.cache may be a link to scratch space, judged by its target
    except OSError as exc:
        raise RegistryError(
            f"cannot use the port registry directory {str(path)!r}: {exc.strerror or exc}; "
            f"set {ENV_REGISTRY_DIR} to a directory of yours, or pass registry=False"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise RegistryError(
            f"the port registry path {str(path)!r} is not a directory; remove it or set {ENV_REGISTRY_DIR} elsewhere"
        )
    if st.st_uid != os.getuid():
        raise RegistryError(
            f"the port registry directory {str(path)!r} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}), "
            f"so its entries could be forged; set {ENV_REGISTRY_DIR} to a directory of yours (mode 700)"
        )
    if st.st_mode & 0o022:
        raise RegistryError(
            f"the port registry directory {str(path)!r} is writable by others (mode {stat.S_IMODE(st.st_mode):o}), "
            f"so its entries could be forged; run 'chmod 700 {path}' or set {ENV_REGISTRY_DIR} to a private directory"
        )


def write_entry(info: ServerInfo) -> Path:
    """Publish ``info`` atomically: temp file (0600), fsync, rename over the final name."""
    directory = ensure_registry_dir()
    final = directory / info.filename
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{info.pid}-{info.port}-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp creates it 0600
                fh.write(info.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            # No fsync of the directory: the rename is atomic for readers already, and
            # after a crash every entry is stale anyway (its pid is gone, readers prune it).
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise RegistryError(
            f"cannot write registry entry {str(final)!r}: {exc.strerror or exc}; "
            f"set {ENV_REGISTRY_DIR} to a writable directory, or pass registry=False"
        ) from exc
    return final


def remove_entry(pid: int, port: int) -> bool:
    """Remove the entry of (pid, port) if present; idempotent. True if a file was removed."""
    path = registry_dir() / f"{pid}-{port}{_SUFFIX}"
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.debug("cannot remove registry entry %s: %s", path, exc)
        return False
    return True


def read_entries() -> list[ServerInfo]:
    """Every trustworthy, well-formed entry (no liveness test); see the module docstring.

    Raises:
        RegistryError: the directory exists but is not private to this user.
    """
    directory = registry_dir()
    if not directory.exists():
        return []
    check_registry_dir(directory)
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        logger.debug("cannot list registry directory %s: %s", directory, exc)
        return []
    entries = []
    for name in names:
        if not name.endswith(_SUFFIX) or name.startswith("."):
            continue
        path = directory / name
        try:
            text = _read_own_small_file(path)
            if text is not None:
                entries.append(ServerInfo.from_json(text))
        except FileNotFoundError:
            continue  # removed while we listed: a clean shutdown
        except (OSError, ValueError) as exc:
            logger.debug("skipping registry file %s: %s", path, exc)
    return entries


def _read_own_small_file(path: Path) -> str | None:
    """The text of ``path`` if it is a small regular file of this user, else None (warned once).

    ``O_NOFOLLOW`` refuses a symlink (to ``/dev/zero``, to another user's file);
    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer;
    ``fstat`` then judges the file actually opened, so it cannot be swapped in between.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _skip_once(path, "it is a symlink")
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _skip_once(path, "it is not a regular file")
            return None
        if _POSIX and st.st_uid != os.getuid():
            _skip_once(path, f"it belongs to uid {st.st_uid}, not to you")
            return None
        if st.st_size > MAX_ENTRY_BYTES:
            _skip_once(path, f"it is {st.st_size} bytes, more than an entry's {MAX_ENTRY_BYTES}")
            return None
        data = os.read(fd, MAX_ENTRY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ENTRY_BYTES:
        _skip_once(path, f"it holds more than an entry's {MAX_ENTRY_BYTES} bytes")
        return None
    return data.decode("utf-8")


def _skip_once(path: Path, why: str) -> None:
    key = (str(path), why)
    if key not in _warned:
        _warned.add(key)
        logger.warning("ignoring port registry file %s: %s; remove it (lightning-stream wrote no such file)", path, why)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (a zombie counts; its port check fails)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would *terminate* the process on Windows
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def is_live(info: ServerInfo, *, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """The entry's pid exists and its ``/health`` answers with that pid."""
    return _liveness(info, timeout) == "live"


def _liveness(info: ServerInfo, timeout: float) -> str:
    """``live``, ``dead`` (safe to prune) or ``unknown`` (another host, or too slow to answer)."""
    if not info.local:
        return "unknown"
    if not pid_alive(info.pid):
        return "dead"
    outcome, health = probe(info.host, info.port, timeout)
    if outcome == "slow":
        return "unknown"
    if health is None or health.get("pid", info.pid) != info.pid:
        return "dead"  # refused, or the port now belongs to someone else
    return "live"


def list_servers(*, prune: bool = True, timeout: float = HEALTH_TIMEOUT_S) -> list[ServerInfo]:
    """Live servers of this machine in the registry, oldest first; dead entries are deleted (``prune``).

    An entry is live when its pid exists and its ``/health`` answers with that pid
    (a recycled pid, or a port now served by someone else, does not count). Only proof
    of death prunes: a dead pid, a refused connection, another pid answering. A server
    too busy to answer within ``timeout``, or one on another host (a registry on a
    shared home directory), is left alone and not listed.

    Raises:
        RegistryError: the registry directory belongs to another user or others can
            write it (the message names it and the fix); see ``check_registry_dir``.
    """
    live = []
    for info in read_entries():
        state = _liveness(info, timeout)
        if state == "live":
            live.append(info)
        elif state == "dead" and prune and info.pid != os.getpid():
            # Our own entries are removed by their server; never race it here.
            logger.debug("pruning stale registry entry %s (pid %d, port %d)", info.filename, info.pid, info.port)
            remove_entry(info.pid, info.port)
    live.sort(key=lambda i: (i.started_at, i.port))
    return live


@dataclass(frozen=True)
class ServerMatch:
    """A live server that serves a logdir: ``run_prefix`` is None when it watches that very
    directory, else the logdir's run name under the watched directory above it (runs are
    paths relative to the watched logdir)."""

    info: ServerInfo
    run_prefix: str | None = None


def find_server_for(
    logdir: str | os.PathLike[str],
    *,
    port: int | None = None,
    covering: bool = True,
    exclude_pid: int | None = None,
) -> ServerMatch | None:
    """The newest live registry server watching ``logdir`` (the CLI's ``tail``, the notebook's magic).

    Args:
        port: only a server on this port.
        covering: also a server watching a directory above ``logdir`` (then ``run_prefix``
            names ``logdir``'s run there); False: only one watching ``logdir`` itself.
        exclude_pid: skip this process's servers (the notebook asks its manager first).

    Directories are compared resolved (symlinks followed). Raises ``RegistryError`` as
    :func:`list_servers` does.
    """
    wanted = os.path.realpath(logdir)
    for info in reversed(list_servers()):
        if info.pid == exclude_pid or (port is not None and info.port != port):
            continue
        for watched in info.logdirs:
            real = os.path.realpath(watched)
            if wanted == real:
                return ServerMatch(info)
            if covering and wanted.startswith(real.rstrip(os.sep) + os.sep):
                return ServerMatch(info, os.path.relpath(wanted, real).replace(os.sep, "/"))
    return None


def find_holder(port: int, entries: Iterable[ServerInfo] | None = None) -> ServerInfo | None:
    """The registry entry of a running process that claims ``port`` (no health check).

    Only names a holder in messages: an unusable registry reads as no entries here.
    """
    if entries is None:
        try:
            entries = read_entries()
        except RegistryError as exc:
            logger.debug("%s", exc)
            return None
    for info in entries:
        if info.port == port and pid_alive(info.pid):
            return info
    return None


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - CI runs Linux only
    import ctypes

    process_query_limited_information = 0x1000
    still_active = 259
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return False
        return bool(code.value == still_active)
    finally:
        kernel32.CloseHandle(handle)

"""The port registry: location, modes, atomic entries, type-checked reads, pruning."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_stream.errors import RegistryError
from lightning_stream.registry import (
    ServerInfo,
    ensure_registry_dir,
    list_servers,
    read_entries,
    remove_entry,
    write_entry,
)
from lightning_stream.server import StreamServer
from tests.proctools import end_process

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX modes and pids")


def _info(pid: int, port: int, **kw: object) -> ServerInfo:
    return ServerInfo(pid=pid, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}", **kw)  # type: ignore[arg-type]


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The pid of a live process that serves nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    end_process(proc)


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_directory_comes_from_the_environment_variable(registry_dir: Path) -> None:
    from lightning_stream.registry import registry_dir as resolve

    assert resolve() == registry_dir


@posix_only
def test_directory_falls_back_to_xdg_runtime_dir_then_home_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning_stream import registry

    monkeypatch.delenv("LIGHTNING_STREAM_REGISTRY_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert registry.registry_dir() == tmp_path / "lightning-stream"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.registry_dir() == tmp_path / "home" / ".cache" / "lightning-stream" / "servers"


@posix_only
def test_directory_is_0700_and_entries_0600_whatever_the_umask(registry_dir: Path) -> None:
    old = os.umask(0)
    try:
        path = write_entry(_info(os.getpid(), 50001))
    finally:
        os.umask(old)
    assert stat.S_IMODE(registry_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name == f"{os.getpid()}-50001.json"


@posix_only
def test_an_existing_loose_directory_is_tightened_to_0700(registry_dir: Path) -> None:
    registry_dir.mkdir(parents=True, mode=0o777)
    os.chmod(registry_dir, 0o777)
    ensure_registry_dir()
    assert stat.S_IMODE(registry_dir.stat().st_mode) == 0o700


def test_entry_round_trips_and_leaves_no_temp_file(registry_dir: Path) -> None:
    info = _info(os.getpid(), 50002, logdirs=("/data/logs",), token_required=True)
    write_entry(info)
    write_entry(info)  # rewriting (watch() adds a logdir) replaces the file
    assert sorted(p.name for p in registry_dir.iterdir()) == [info.filename]
    assert read_entries() == [info]


def test_corrupt_and_mistyped_files_are_skipped_with_a_debug_log(
    registry_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _info(os.getpid(), 50003)
    write_entry(good)
    (registry_dir / "1-1.json").write_text("{not json")
    (registry_dir / "2-2.json").write_text('{"pid": 2, "host": "h", "port": "2", "url": "u"}')
    (registry_dir / "3-3.json").write_text('{"pid": 3, "host": "h", "url": "u"}')
    (registry_dir / "4-4.json").write_text('{"pid": true, "host": "h", "port": 4, "url": "u"}')
    (registry_dir / "5-5.json").write_text('{"pid": 5, "host": "h", "port": 5, "url": "u", "logdirs": "x"}')
    (registry_dir / "6-6.json").write_text("[1, 2]")
    with caplog.at_level(logging.DEBUG, logger="lightning_stream.registry"):
        assert read_entries() == [good]
    for name in ("1-1", "2-2", "3-3", "4-4", "5-5", "6-6"):
        assert f"{name}.json" in caplog.text


def test_remove_entry_is_idempotent(registry_dir: Path) -> None:
    write_entry(_info(os.getpid(), 50004))
    assert remove_entry(os.getpid(), 50004)
    assert not remove_entry(os.getpid(), 50004)
    assert list(registry_dir.iterdir()) == []


def test_unusable_directory_raises_registry_error_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(blocker / "servers"))
    with pytest.raises(RegistryError, match="LIGHTNING_STREAM_REGISTRY_DIR.*registry=False"):
        write_entry(_info(os.getpid(), 50005))


@posix_only
def test_list_servers_prunes_dead_pids_and_silent_ports(registry_dir: Path, sleeper: int, dead_pid: int) -> None:
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        write_entry(_info(dead_pid, 50006))  # the process is gone
        write_entry(_info(sleeper, 50007))  # alive, but nothing answers /health there
        write_entry(_info(sleeper, server.port))  # a port answered by another pid (recycled)
        live = list_servers()
        assert [(i.pid, i.port) for i in live] == [(os.getpid(), server.port)]
        assert sorted(p.name for p in registry_dir.iterdir()) == [server.info().filename]


def test_list_servers_without_prune_keeps_files(registry_dir: Path, dead_pid: int) -> None:
    write_entry(_info(dead_pid, 50008))
    assert list_servers(prune=False) == []
    assert [p.name for p in registry_dir.iterdir()] == [f"{dead_pid}-50008.json"]


def test_missing_directory_reads_as_empty(registry_dir: Path) -> None:
    assert not registry_dir.exists()
    assert read_entries() == []
    assert list_servers() == []
    assert not registry_dir.exists()  # reading creates nothing


def test_entries_of_other_hosts_are_neither_listed_nor_pruned(registry_dir: Path, dead_pid: int) -> None:
    # a registry on a shared home directory: node 0's live server must survive `ls` on node 1
    write_entry(_info(dead_pid, 50009, hostname="some-other-node"))
    assert list_servers() == []
    assert [p.name for p in registry_dir.iterdir()] == [f"{dead_pid}-50009.json"]
    assert read_entries()[0].hostname == "some-other-node"


def test_a_server_too_busy_to_answer_is_not_pruned(registry_dir: Path, sleeper: int) -> None:
    import socket

    with socket.socket() as busy:  # accepts connections (backlog) but never answers
        busy.bind(("127.0.0.1", 0))
        busy.listen(8)
        port = busy.getsockname()[1]
        write_entry(_info(sleeper, port))
        assert list_servers(timeout=0.2) == []
        assert [p.name for p in registry_dir.iterdir()] == [f"{sleeper}-{port}.json"]


def test_entries_written_before_hostnames_count_as_local(registry_dir: Path, dead_pid: int) -> None:
    path = write_entry(_info(dead_pid, 50010))
    text = path.read_text().replace('"hostname"', '"_ignored"')
    path.write_text(text)
    assert read_entries()[0].local
    assert list_servers() == []
    assert list(registry_dir.iterdir()) == []  # dead and local: pruned

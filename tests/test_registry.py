"""The port registry: location, modes, atomic entries, type-checked reads, pruning."""

from __future__ import annotations

import json
import logging
import os
import pwd
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
from tests.otheruser import as_other_user, fake_server_of_other_user, needs_root, shared_tmp
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
def test_an_existing_readable_directory_of_ours_is_tightened_to_0700(registry_dir: Path) -> None:
    registry_dir.mkdir(parents=True)
    os.chmod(registry_dir, 0o755)
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


# ---- shared machine: trust nothing we did not write (issue 14, docs/security.md) ----------------


@posix_only
def test_a_directory_others_can_write_is_refused_with_the_chmod_fix(registry_dir: Path) -> None:
    registry_dir.mkdir(parents=True)
    os.chmod(registry_dir, 0o777)
    with pytest.raises(RegistryError, match=rf"{registry_dir}.*writable by others.*chmod 700"):
        write_entry(_info(os.getpid(), 50011))
    with pytest.raises(RegistryError, match="LIGHTNING_STREAM_REGISTRY_DIR"):
        list_servers()
    assert stat.S_IMODE(registry_dir.stat().st_mode) == 0o777  # refused, not silently mended
    result = _cli("ls")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "chmod 700" in result.stderr


@posix_only
def test_missing_parents_are_created_0700_whatever_the_umask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "servers"
    monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(deep))
    old = os.umask(0)
    try:
        write_entry(_info(os.getpid(), 50012))
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", deep):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


@posix_only
def test_a_directory_reached_through_a_symlink_is_never_chmodded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "scratch"
    target.mkdir()
    os.chmod(target, 0o755)
    link = tmp_path / "servers"
    link.symlink_to(target)
    monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(link))
    write_entry(_info(os.getpid(), 50013))  # a private-enough directory of ours: usable through the link
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


@posix_only
def test_an_entry_whose_url_is_not_its_own_host_and_port_is_never_used(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_stream.errors import ServerNotRunningError
    from lightning_stream.notebook import dashboard_url

    monkeypatch.setenv("LIGHTNING_STREAM_TOKEN", "s3cret-token-value")
    with StreamServer(port=None, watchdog_interval_s=0, token="s3cret-token-value") as server:
        path = registry_dir / server.info().filename
        path.write_text(path.read_text().replace(server.url, "http://evil.example/phish/"))
        assert list_servers() == []
        with pytest.raises(ServerNotRunningError):
            dashboard_url()


@posix_only
def test_a_hand_made_server_info_with_a_foreign_url_gets_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_stream.notebook import dashboard_url

    monkeypatch.setenv("LIGHTNING_STREAM_TOKEN", "s3cret-token-value")
    forged = ServerInfo(pid=1, host="127.0.0.1", port=6007, url="http://evil.example/phish/", token_required=True)
    with pytest.raises(ValueError, match="evil.example"):
        dashboard_url(forged)


@needs_root
def test_entries_owned_by_another_user_are_skipped_with_one_warning(
    registry_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        path = registry_dir / server.info().filename
        uid = pwd.getpwnam("nobody").pw_uid
        os.chown(path, uid, -1)  # what another user planted while the directory was open to them
        with caplog.at_level(logging.WARNING, logger="lightning_stream.registry"):
            assert list_servers() == []
            assert list_servers() == []
        assert caplog.text.count(str(path)) == 1
        assert f"uid {uid}" in caplog.text


@needs_root
def test_a_registry_another_user_planted_is_refused_and_the_token_never_reaches_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The attack of issue 14: a pre-created world-writable registry with a lookalike server."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    token = "the-users-own-token-1234"
    with shared_tmp() as shared, fake_server_of_other_user() as fake:
        planted = shared / "lightning-stream"

        def plant() -> None:
            planted.mkdir()
            os.chmod(planted, 0o777)
            entry = ServerInfo(
                pid=fake.pid,
                host="127.0.0.1",
                port=fake.port,
                url=f"http://127.0.0.1:{fake.port}",
                logdirs=(str(logdir),),
                token_required=True,
            )
            (planted / f"{fake.pid}-{fake.port}.json").write_text(entry.to_json())

        as_other_user(plant)
        env = {"LIGHTNING_STREAM_REGISTRY_DIR": str(planted), "LIGHTNING_STREAM_TOKEN": token}
        monkeypatch.setenv("LIGHTNING_STREAM_REGISTRY_DIR", str(planted))
        monkeypatch.setenv("LIGHTNING_STREAM_TOKEN", token)

        listed = _cli("ls", "--json", env=env)
        assert listed.returncode == 1
        assert str(planted) in listed.stderr
        assert str(fake.port) not in listed.stdout
        from lightning_stream.notebook import dashboard_url

        with pytest.raises(RegistryError, match="belongs to uid"):
            dashboard_url()
        tailed = _cli("tail", str(logdir), "--duration", "2", "--retry", "1", env=env)
        assert tailed.returncode == 1
        assert "belongs to uid" in tailed.stderr
        assert fake.authorizations() == []


@posix_only
def test_fifos_dev_zero_links_and_huge_files_are_skipped_not_read(registry_dir: Path, tmp_path: Path) -> None:
    """``ls`` hung on a FIFO and grew to gigabytes on a link to /dev/zero; now each is one warning."""
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        os.mkfifo(registry_dir / "1-1.json")
        (registry_dir / "2-2.json").symlink_to("/dev/zero")
        with open(registry_dir / "3-3.json", "wb") as huge:
            huge.truncate(1 << 32)  # sparse: 4 GiB that take no disk
        result = _cli("ls", "--json")
        assert result.returncode == 0, result.stderr
        assert [entry["port"] for entry in json.loads(result.stdout)] == [server.port]
        for name in ("1-1.json", "2-2.json", "3-3.json"):
            assert result.stderr.count(name) == 1, result.stderr


@posix_only
def test_a_fifo_in_the_registry_does_not_stop_a_busy_port_fallback(registry_dir: Path) -> None:
    """``StreamCallback(port=<busy>)`` never started training: naming the holder read the FIFO."""
    registry_dir.mkdir(parents=True, mode=0o700)
    os.mkfifo(registry_dir / "1-1.json")
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        script = (
            "from lightning_stream.server import StreamServer\n"
            f"with StreamServer(port={port}, watchdog_interval_s=0) as s: print(s.port)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=_BOUND_S, env=_env()
        )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) != port


_BOUND_S = 60.0  # what main's readers did instead was hang forever, or eat memory until the limit below


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


def _limit_memory() -> None:  # pragma: no cover - runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``lightning-stream ARGS`` in a subprocess, bounded in time and memory."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_stream", *args],
        capture_output=True,
        text=True,
        timeout=_BOUND_S,
        env=_env(env),
        preexec_fn=_limit_memory,
    )


def test_find_server_for_a_logdir_it_watches_or_one_below(registry_dir: Path, tmp_path: Path) -> None:
    from lightning_stream.registry import find_server_for

    inner = tmp_path / "logs" / "version_0"
    inner.mkdir(parents=True)
    with StreamServer(port=None, watchdog_interval_s=0) as server:
        server.watch(tmp_path / "logs")
        exact = find_server_for(tmp_path / "logs")
        assert exact is not None
        assert (exact.info.port, exact.run_prefix) == (server.port, None)
        below = find_server_for(inner)
        assert below is not None
        assert (below.info.port, below.run_prefix) == (server.port, "version_0")
        assert find_server_for(inner, covering=False) is None  # the notebook's question: that very directory
        assert find_server_for(tmp_path / "logs", exclude_pid=os.getpid()) is None
        assert find_server_for(tmp_path / "logs", port=server.port + 1 if server.port < 65535 else 1) is None
        assert find_server_for(tmp_path) is None  # a directory above the watched one is not served

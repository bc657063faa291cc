"""StreamClient against a real StreamServer on loopback (and a real TCP relay to cut connections)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_stream.client import StreamClient, StreamPoint
from lightning_stream.config import ServerConfig
from lightning_stream.errors import ClientError, NotFoundError
from lightning_stream.follow import Follower, _SSEParser
from lightning_stream.server import StreamServer
from tests import proctools

WAIT_S = 20.0
END = "__end__"  # tag suffix of the sentinel point that ends a Collector


@pytest.fixture
def server() -> Iterator[StreamServer]:
    with StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)) as srv:
        yield srv


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    proctools.wait_until(predicate, timeout, poll_s=0.02)


async def await_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """``wait_until`` for async tests: the predicate runs in a thread (it may do blocking HTTP)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def sse_clients(url: str) -> int:
    return int(StreamClient(url).health()["clients"]["sse"])


class Collector:
    """Runs ``client.stream(...)`` in a thread and records what it yields, up to and
    excluding a point with tag ``END`` (the sentinel ``finish()`` publishes)."""

    def __init__(self, client: StreamClient, **kwargs: Any) -> None:
        self.points: list[StreamPoint] = []
        self.statuses: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        kwargs.setdefault("duration", WAIT_S * 2)
        kwargs.setdefault("on_status", self.statuses.append)
        self._gen = client.stream(**kwargs)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for point in self._gen:
                if point.tag.endswith(END):
                    break
                self.points.append(point)
        except BaseException as exc:
            self.error = exc
        finally:
            self._gen.close()

    def start(self, url: str, clients: int = 1) -> Collector:
        self._thread.start()
        wait_until(lambda: sse_clients(url) >= clients or self.error is not None)
        assert self.error is None, self.error
        return self

    def wait_points(self, n: int) -> list[StreamPoint]:
        wait_until(lambda: len(self.points) >= n or self.error is not None)
        assert self.error is None, self.error
        return list(self.points)

    def finish(self, server: StreamServer, run: str = "sentinel", tag: str = END) -> list[StreamPoint]:
        """Publish the sentinel and wait for the thread: every point sent before it is in."""
        server.publish(run, tag, 0, 0.0)
        self._thread.join(WAIT_S * 3)
        assert not self._thread.is_alive()
        assert self.error is None, self.error
        return self.points


class Relay:
    """A loopback TCP relay in front of the server: ``cut()`` drops every connection,
    ``refuse`` makes new ones close at once (the server stays up meanwhile)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.refuse = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)  # wakes the other pump's recv
            src.close()  # the other pump closes dst

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()


@pytest.fixture
def relay(server: StreamServer) -> Iterator[Relay]:
    r = Relay(server.port)
    yield r
    r.close()


def publish_steps(server: StreamServer, run: str, tag: str, steps: range) -> None:
    for step in steps:
        server.publish(run, tag, step, float(step) / 10)


def steps_of(points: list[StreamPoint], run: str = "r", tag: str = "loss") -> list[int]:
    return [p.step for p in points if p.run == run and p.tag == tag]


# ---------------------------------------------------------------------------- REST


def test_runs_and_scalars_return_what_the_server_holds(server: StreamServer) -> None:
    publish_steps(server, "r", "loss", range(5))
    client = StreamClient(server.url)
    wait_until(lambda: any(r["run"] == "r" and r["last_step"] == 4 for r in client.runs()))
    (run,) = client.runs()
    assert run["tags"] == ["loss"]
    points = client.scalars("r", "loss")
    assert [(s, v) for s, _, v in points] == [(s, s / 10) for s in range(5)]
    assert all(isinstance(w, float) and w > 0 for _, w, _ in points)
    assert [s for s, _, _ in client.scalars("r", "loss", since_step=2)] == [3, 4]
    assert [s for s, _, _ in client.scalars("r", "loss", since_step=0, limit=2)] == [1, 2]


def test_unknown_run_raises_not_found_error_with_status_404(server: StreamServer) -> None:
    with pytest.raises(NotFoundError, match="404") as info:
        StreamClient(server.url).scalars("no-such-run", "loss")
    assert info.value.status == 404


def test_health_reports_ok_with_the_server_pid(server: StreamServer) -> None:
    import os

    health = StreamClient(server.url + "/").health()
    assert health["status"] == "ok"
    assert health["pid"] == os.getpid()


def test_unreachable_server_raises_client_error_that_names_the_url() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    client = StreamClient(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ClientError, match=rf"cannot reach 'http://127.0.0.1:{port}/api/runs'.*lightning-stream ls"):
        client.runs()
    with pytest.raises(ClientError, match="cannot reach"):
        next(client.stream())


@pytest.mark.parametrize("url", ["", "ftp://example.com", "http://127.0.0.1:99999"])
def test_bad_url_is_a_value_error_that_shows_a_good_one(url: str) -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        StreamClient(url)


def test_token_is_sent_as_bearer_and_a_missing_one_says_how_to_pass_it() -> None:
    token = "s3cret-token-for-tests"
    with StreamServer(ServerConfig(registry=False, watchdog_interval_s=0, token=token)) as srv:
        with pytest.raises(ClientError, match="LIGHTNING_STREAM_TOKEN") as info:
            StreamClient(srv.url).runs()
        assert info.value.status == 401
        assert StreamClient(srv.url, token=token).runs() == []


def test_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_STREAM_TOKEN", "from-the-environment")
    assert StreamClient("http://127.0.0.1:1").token == "from-the-environment"
    assert StreamClient("http://127.0.0.1:1", token="explicit-token").token == "explicit-token"


# ------------------------------------------------------------------------- live


def test_stream_yields_points_published_after_it_started_in_order(server: StreamServer) -> None:
    client = StreamClient(server.url)
    start = client.health()["seq"]
    publish_steps(server, "r", "loss", range(3))  # history: not part of a live stream
    wait_until(lambda: client.health()["seq"] > start)  # broadcast done (REST may show points a tick earlier)
    collector = Collector(client).start(server.url)
    publish_steps(server, "r", "loss", range(3, 8))
    points = collector.finish(server)
    assert steps_of(points) == [3, 4, 5, 6, 7]
    assert [p.value for p in points] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    assert all(p.seq >= 1 for p in points)
    assert [p.seq for p in points] == sorted(p.seq for p in points)


def test_stream_yields_the_rewritten_steps_of_a_series_that_goes_back(server: StreamServer) -> None:
    # a run resumed from a checkpoint: the server sends a series reset, then the new steps
    client = StreamClient(server.url)
    collector = Collector(client).start(server.url)
    publish_steps(server, "r", "loss", range(10))
    collector.wait_points(10)
    publish_steps(server, "r", "loss", range(5, 8))
    points = collector.finish(server)
    assert steps_of(points) == [*range(10), 5, 6, 7]
    assert [s for s, _, _ in client.scalars("r", "loss")] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_stream_filters_runs_and_tags_by_glob(server: StreamServer) -> None:
    client = StreamClient(server.url)
    collector = Collector(client, run="keep*", tag="train/*").start(server.url)
    for run in ("keep-1", "drop-1"):
        for tag in ("train/loss", "val/loss"):
            server.publish(run, tag, 1, 1.0)
    server.publish("keep-2", "train/acc", 1, 1.0)
    points = collector.finish(server, run="keep-3", tag="train/" + END)
    assert sorted((p.run, p.tag) for p in points) == [("keep-1", "train/loss"), ("keep-2", "train/acc")]


def test_stream_stops_after_duration_when_idle(server: StreamServer) -> None:
    started = time.monotonic()
    assert list(StreamClient(server.url).stream(duration=0.5)) == []
    assert time.monotonic() - started >= 0.5


def test_closing_the_generator_closes_the_connection(server: StreamServer) -> None:
    client = StreamClient(server.url)
    points = client.stream(duration=WAIT_S)
    thread = threading.Thread(target=lambda: next(points, None), daemon=True)
    thread.start()
    wait_until(lambda: sse_clients(server.url) == 1)
    server.publish("r", "loss", 1, 1.0)
    thread.join(WAIT_S)
    points.close()
    wait_until(lambda: sse_clients(server.url) == 0)


def test_status_messages_reach_on_status(server: StreamServer) -> None:
    collector = Collector(StreamClient(server.url)).start(server.url)
    server.publish_status("r", "finished")
    collector.finish(server)
    assert collector.statuses[0]["run"] == "r"
    assert collector.statuses[0]["state"] == "finished"


def test_dropped_connection_resumes_by_last_event_id_without_loss_or_duplicates(
    server: StreamServer, relay: Relay
) -> None:
    collector = Collector(StreamClient(relay.url)).start(server.url)
    publish_steps(server, "r", "loss", range(0, 5))
    collector.wait_points(5)
    relay.refuse = True
    relay.cut()
    wait_until(lambda: sse_clients(server.url) == 0)
    publish_steps(server, "r", "loss", range(5, 10))  # published while the client is away
    time.sleep(0.2)
    relay.refuse = False
    wait_until(lambda: sse_clients(server.url) == 1)
    publish_steps(server, "r", "loss", range(10, 12))
    points = collector.finish(server)
    assert steps_of(points) == list(range(12))
    assert server.restarts == 0
    assert [p.seq for p in points] == sorted(p.seq for p in points)


def test_reset_rereads_missed_points_over_rest_exactly_once(relay: Relay) -> None:
    # The fixture server's replay buffer is large; this one holds a single point.
    with StreamServer(ServerConfig(registry=False, watchdog_interval_s=0, replay_points=1)) as small:
        relay.target = small.port
        collector = Collector(StreamClient(relay.url)).start(small.url)
        publish_steps(small, "r", "loss", range(0, 3))
        collector.wait_points(3)
        relay.refuse = True
        relay.cut()
        wait_until(lambda: sse_clients(small.url) == 0)
        for step in range(3, 20):  # far more than the replay buffer holds
            small.publish("r", "loss", step, step / 10)
            small.publish("r", "acc", step, step / 100)  # a series the client has not seen yet
            time.sleep(0.01)  # separate batches, so the buffer really overflows
        wait_until(lambda: StreamClient(small.url).scalars("r", "loss")[-1][0] == 19)
        relay.refuse = False
        wait_until(lambda: sse_clients(small.url) == 1)
        publish_steps(small, "r", "loss", range(20, 22))
        collector.finish(small)
    assert steps_of(collector.points) == list(range(22))
    assert steps_of(collector.points, tag="acc") == list(range(3, 20))


@pytest.mark.torch
def test_server_restart_is_detected_and_history_is_not_replayed_twice(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "logs"
    writer = SummaryWriter(str(logdir / "a"))
    for step in range(5):
        writer.add_scalar("loss", step, step)
    writer.flush()
    with StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)) as srv:
        start = StreamClient(srv.url).health()["seq"]
        srv.watch(logdir)
        wait_until(lambda: StreamClient(srv.url).health()["seq"] > start)  # history broadcast before we connect
        collector = Collector(StreamClient(srv.url)).start(srv.url)
        for step in range(5, 8):
            writer.add_scalar("loss", step, step)
        writer.flush()
        collector.wait_points(3)
        srv.restart()  # a new incarnation: seqs start over, the logdir is read again
        for step in range(8, 10):
            writer.add_scalar("loss", step, step)
        writer.close()
        collector.wait_points(5)
        collector.finish(srv)
    steps = steps_of(collector.points, run="a")
    assert steps[-5:] == [5, 6, 7, 8, 9]
    assert steps == sorted(set(steps)), "points yielded twice after the restart"


async def test_astream_yields_live_points_and_honours_duration(server: StreamServer) -> None:
    client = StreamClient(server.url)
    received: list[StreamPoint] = []

    async def consume() -> None:
        async for point in client.astream(tag="loss", duration=WAIT_S):
            received.append(point)
            if len(received) == 3:
                break

    task = asyncio.create_task(consume())
    await await_until(lambda: sse_clients(server.url) >= 1)
    server.publish("r", "other", 0, 0.0)
    publish_steps(server, "r", "loss", range(3))
    await asyncio.wait_for(task, WAIT_S)
    assert steps_of(received) == [0, 1, 2]

    started = time.monotonic()
    assert [p async for p in client.astream(duration=0.3)] == []
    assert time.monotonic() - started >= 0.3


async def test_astream_resumes_after_a_dropped_connection(server: StreamServer, relay: Relay) -> None:
    received: list[StreamPoint] = []

    async def consume() -> None:
        async for point in StreamClient(relay.url).astream(duration=WAIT_S):
            received.append(point)
            if len(received) == 6:
                break

    task = asyncio.create_task(consume())
    await await_until(lambda: sse_clients(server.url) >= 1)
    publish_steps(server, "r", "loss", range(3))
    await await_until(lambda: len(received) >= 3)
    relay.refuse = True
    relay.cut()
    publish_steps(server, "r", "loss", range(3, 6))
    await asyncio.sleep(0.2)
    relay.refuse = False
    await asyncio.wait_for(task, WAIT_S)
    assert steps_of(received) == list(range(6))


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = _SSEParser()
    lines = [": keep-alive\r\n", "\r\n", "id: 7\n", "event: scalars\n", 'data: {"a":\n', "data: 1}\n", "\n"]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert len(events) == 1
    assert (events[0].id, events[0].event, events[0].data) == ("7", "scalars", '{"a":\n1}')
    assert parser.feed("retry: 2000\n") is None
    assert parser.feed("\n") is None  # a block without data dispatches nothing


def test_importing_the_client_does_not_import_torch_lightning_or_aiohttp() -> None:
    code = (
        "import sys\n"
        "from lightning_stream import StreamClient\n"
        "import lightning_stream.notebook\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'aiohttp', 'IPython'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert result.stdout.strip() == "[]"


async def test_astream_reads_frames_longer_than_aiohttps_line_limit(server: StreamServer) -> None:
    tag = "t" * 400  # 2,000 points x ~500 bytes: one `data:` line of ~1 MB
    client = StreamClient(server.url)
    received: list[StreamPoint] = []

    async def consume() -> None:
        async for point in client.astream(duration=WAIT_S):
            received.append(point)
            if len(received) == 2000:
                break

    task = asyncio.create_task(consume())
    await await_until(lambda: sse_clients(server.url) >= 1)
    publish_steps(server, "r", tag, range(2000))
    await asyncio.wait_for(task, WAIT_S)
    assert steps_of(received, tag=tag) == list(range(2000))


def test_stream_reads_the_columnar_form_and_yields_the_same_points(server: StreamServer) -> None:
    collector = Collector(StreamClient(server.url)).start(server.url)
    hub = server._backend._inc.hub  # type: ignore[attr-defined]
    assert [sub.format for sub in list(hub._subs)] == ["columns"]  # a third of the bytes of point objects
    server.publish("r", "loss", 1, 0.5, wall_time=1001.0)
    server.publish("r", "loss", 2, float("nan"), wall_time=1002.0)  # "NaN" on the wire
    server.publish("r", "acc", 2, float("-inf"), wall_time=1002.0)
    points = collector.finish(server)
    assert [(p.run, p.tag, p.step, p.wall_time) for p in points] == [
        ("r", "loss", 1, 1001.0),
        ("r", "loss", 2, 1002.0),
        ("r", "acc", 2, 1002.0),
    ]
    assert points[0].value == 0.5
    assert math.isnan(points[1].value)
    assert points[2].value == float("-inf")


def test_follower_reads_columns_and_point_objects_alike() -> None:
    follower = Follower("*", "*", None, None)
    columns = (
        b'id: 7\nevent: scalars\ndata: {"series":[{"run":"r","tag":"t","steps":[1,2],'
        b'"wall_times":[10.5,11.5],"values":[0.25,"Infinity"]}]}\n\n'
    )
    objects = (
        b'id: 8\nevent: scalars\ndata: {"points":[{"run":"r","tag":"t","step":3,"wall_time":12.5,"value":1.0}]}\n\n'
    )
    got = [p for line in (columns + objects).decode().splitlines(keepends=True) for p in follower.feed(line)]
    assert got == [
        StreamPoint("r", "t", 1, 10.5, 0.25, 7),
        StreamPoint("r", "t", 2, 11.5, float("inf"), 7),
        StreamPoint("r", "t", 3, 12.5, 1.0, 8),
    ]
    assert "format=columns" in follower.path()

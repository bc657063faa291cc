"""Soak and chaos run: writer, server with forced restarts, dozens of misbehaving clients; exactly-once check.

Run:  .venv/bin/python benchmarks/soak.py [--duration 600] [--clients 24] [--restarts 4] [--quick]

One process tree on 127.0.0.1 (multiprocessing, spawn):

* **writer**: appends scalars to several runs of a fresh logdir. ``clean_*`` runs are raw TFRecord files
  (hand-framed ``Event`` protos) that only ever grow, with injected damage: records with a bad data
  checksum, garbage bytes, a header announcing an impossible length, and records written in two halves
  with a pause between (a torn write the reader must wait for). ``torch_0`` is written by torch's
  ``SummaryWriter`` (one tag old-style, one ``new_style``). ``chaos_*`` runs are truncated in place
  and replaced whole (``os.replace``, what an object store does) now and then, and continue from the
  cut like a run resumed from a checkpoint. A run appears mid-way and one run starts a second file.
* **server**: ``get_stream_server_manager().acquire(...)`` watching the logdir; ``force_restart()``
  ``--restarts`` times at even intervals (same port).
* **clients** (2 processes, SSE and WS mixed, some filtered): each first loads history like a real
  client (``/health`` seq, ``/api/runs``, ``/api/scalars`` with its ``seq``), then subscribes with
  ``since``/``Last-Event-ID``. Behaviours: steady; stallers stop reading for seconds; vanishers drop
  the connection and resume with the last seq; long vanishers stay away past the replay buffer.
  On ``reset`` a client re-reads REST, as the hub's docstring prescribes.

What "exactly once" means here, per client and per series (run, tag) its filter matches:

1. **Order, no gaps**: seqs received (scalars/status/reset) never go back; for a client subscribed to
   everything, each message's seq is the previous one + 1 (or the ``since`` it resumed from + 1), except
   right after a ``reset``, whose seq it continues from.
2. **No duplicates**: a REST read of a series returns the points of every seq <= its ``seq``; stream
   points of that series in messages with seq <= that value are skipped (counted as ``overlap``, not
   delivered). Of the rest, within one sync epoch (between two REST reads of the series) steps must
   strictly increase. In ``clean_*``/``torch_*`` runs any step that does not is a duplicate (FAIL). In
   ``chaos_*`` runs a file rewritten under the reader is read again from its start, so the series may go
   back at most once per truncation/replacement of that run (more is a FAIL).
3. **Nothing lost**: applying REST snapshots and delivered points in order, with the hub's purge rule
   (a step <= the last drops held points from that step on), each client ends with exactly the points
   of the final files that a reader can decode (the writer's own model: valid records that survive),
   steps and values. The server's REST view is compared with the same model first, so a reader
   problem is told apart from a streaming one.

4. **Restarts leave nothing behind**: after the last restart exactly one ``Hub`` is alive in the server
   process (``gc``), i.e. no old incarnation (with every point it held) is still referenced.

Also reported: server RSS sampled every second (plateau: the median of the last third must not exceed
the median of the middle third by more than max(16 MiB, 10 %); not judged for runs shorter than
120 s), event-loop lag from ``/health``, counts (points written, delivered, resets, reconnects,
restarts, reader errors from ``/metrics``), and WARNING/ERROR lines of the server log. The last line
is ``SOAK PASS ...`` or ``SOAK FAIL ...``; the exit status is 1 on FAIL.

``--clear-aiohttp-cache`` is a diagnostic: after each restart it clears aiohttp's module-level
``web_app._cached_build_middleware`` (an ``lru_cache(maxsize=1024)`` whose keys hold the route handler and
the application), which is what keeps old incarnations alive (found by this benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from array import array
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CLEAN_TAGS = ("loss", "acc", "lr")
CHAOS_TAGS = ("loss", "acc")
TORCH_TAGS = ("loss", "acc")
REPLAY_POINTS = 20_000  # small, so that long absences outlive the replay buffer
SUBSCRIBER_QUEUE = 256
IDLE_DONE_S = 3.0  # final phase: a client is done after this long without a message
CLIENT_PROCESSES = 2

# ---------------------------------------------------------------------------------------------------
# shared helpers


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # pragma: no cover - Windows
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text: str = resp.read().decode()
        return text


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def value_of(gen: int, step: int, tag_index: int) -> float:
    """A float32-exact value naming generation, step and tag, so a stale or cross-wired point shows."""
    return float(((gen % 16) << 20) | ((step & 0x3FFFF) << 2) | tag_index)


# ---------------------------------------------------------------------------------------------------
# writer: raw TFRecord framing (written here, independently of lightning_stream.tfrecord)

_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    from crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


def event_bytes(step: int, values: list[tuple[str, float]], wall_time: float) -> bytes:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values])
    data: bytes = event_pb2.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()
    return data


def file_version_bytes() -> bytes:
    from tensorboard.compat.proto import event_pb2

    data: bytes = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()
    return data


Point = tuple[str, int, float]  # tag, step, value


@dataclass
class Segment:
    data: bytes
    points: list[Point]  # what a reader can decode from it (empty for damage)


class RawFile:
    """One event file and the writer's model of it: the byte segments and the points each holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.segments: list[Segment] = []
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open like a real writer
        self.append([Segment(frame_record(file_version_bytes()), [])])

    def append(self, segments: list[Segment]) -> None:
        self._fh.write(b"".join(s.data for s in segments))
        self._fh.flush()
        self.segments.extend(segments)

    def append_torn(self, segment: Segment, pause_s: float) -> None:
        """A record written in two halves: the reader sees a partial record and must wait for it."""
        cut = random.randint(1, len(segment.data) - 1)
        self._fh.write(segment.data[:cut])
        self._fh.flush()
        time.sleep(pause_s)
        self._fh.write(segment.data[cut:])
        self._fh.flush()
        self.segments.append(segment)

    def truncate(self, keep: int) -> None:
        """Cut the file in place after ``keep`` segments (O_APPEND writes continue at the new end)."""
        self.segments = self.segments[:keep]
        os.truncate(self.path, sum(len(s.data) for s in self.segments))

    def replace(self, keep: int, more: list[Segment]) -> None:
        """Rewrite the whole file (new inode): the first ``keep`` segments, then ``more``."""
        self.segments = self.segments[:keep] + more
        tmp = self.path.with_name(f".rewrite-{os.getpid()}")  # no 'tfevents' in the name: not listed
        tmp.write_bytes(b"".join(s.data for s in self.segments))
        self._fh.close()
        os.replace(tmp, self.path)
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def last_step(self) -> int:
        for seg in reversed(self.segments):
            if seg.points:
                return seg.points[-1][1]
        return -1

    def close(self) -> None:
        self._fh.close()


def damage_segment(kind: str) -> Segment:
    if kind == "crc":  # a valid header, data with one byte flipped: skipped by its length
        good = bytearray(frame_record(event_bytes(0, [("loss", 1.0)], time.time())))
        good[14] ^= 0xFF
        return Segment(bytes(good), [])
    if kind == "badlen":  # a header with a valid checksum announcing 2**40 bytes: resynchronised past
        length = struct.pack("<Q", 1 << 40)
        return Segment(length + struct.pack("<I", _masked_crc(length)), [])
    while True:  # garbage without any valid header inside
        junk = os.urandom(random.randint(5, 60))
        if not any(
            _masked_crc(junk[i : i + 8]) == struct.unpack_from("<I", junk, i + 8)[0] for i in range(len(junk) - 11)
        ):
            return Segment(junk, [])


@dataclass
class RawRun:
    name: str
    tags: tuple[str, ...]
    directory: Path
    files: list[RawFile] = field(default_factory=list)
    gen: int = 0
    rewrites: int = 0

    def open_file(self) -> RawFile:
        self.directory.mkdir(parents=True, exist_ok=True)
        f = RawFile(self.directory / f"events.out.tfevents.{time.time():.6f}.soak.{len(self.files)}")
        self.files.append(f)
        return f

    def records(self, first_step: int, count: int) -> list[Segment]:
        """``count`` steps; per step either one event holding every tag or one event per tag."""
        out: list[Segment] = []
        now = time.time()
        for step in range(first_step, first_step + count):
            vals = [(t, value_of(self.gen, step, i)) for i, t in enumerate(self.tags)]
            if step % 3:
                out.append(Segment(frame_record(event_bytes(step, vals, now)), [(t, step, v) for t, v in vals]))
            else:
                for t, v in vals:
                    out.append(Segment(frame_record(event_bytes(step, [(t, v)], now)), [(t, step, v)]))
        return out

    def model(self) -> dict[str, list[tuple[int, float]]]:
        series: dict[str, list[tuple[int, float]]] = {t: [] for t in self.tags}
        for f in self.files:  # the reader reads a run's files in name order: creation order here
            for seg in f.segments:
                for tag, step, value in seg.points:
                    series[tag].append((step, value))
        return series


def writer_main(cfg: dict[str, Any], ready: Any, stop: Any, out_path: str) -> None:
    """Write until ``stop``; then dump the model of the final files and the counts to ``out_path``."""
    from torch.utils.tensorboard import SummaryWriter

    rng = random.Random(cfg["seed"])
    random.seed(cfg["seed"] + 1)
    logdir = Path(cfg["logdir"])
    duration = cfg["duration"]
    counts: Counter[str] = Counter()
    raw: dict[str, RawRun] = {}
    for i in range(cfg["clean_runs"]):
        raw[f"clean_{i}"] = RawRun(f"clean_{i}", CLEAN_TAGS, logdir / f"clean_{i}")
    for i in range(cfg["chaos_runs"]):
        raw[f"chaos_{i}"] = RawRun(f"chaos_{i}", CHAOS_TAGS, logdir / f"chaos_{i}")
    for run in raw.values():
        run.open_file()
    torch_writer = SummaryWriter(str(logdir / "torch_0"), flush_secs=3600)
    torch_points: dict[str, list[tuple[int, float]]] = {t: [] for t in TORCH_TAGS}
    torch_step = 0
    late_run_at = duration * 0.3
    rotate_at = duration * 0.5
    ready.set()
    t0 = time.monotonic()
    tick = 0.2
    while not stop.is_set():
        elapsed = time.monotonic() - t0
        if late_run_at is not None and elapsed >= late_run_at:
            late_run_at = None
            run = raw["clean_late"] = RawRun("clean_late", CLEAN_TAGS, logdir / "clean_late")
            run.open_file()
            counts["runs_added"] += 1
        if rotate_at is not None and elapsed >= rotate_at and "clean_1" in raw:
            rotate_at = None
            raw["clean_1"].open_file()  # a second event file in the same run, steps continue
            counts["files_rotated"] += 1
        for run in raw.values():
            f = run.files[-1]
            first = f.last_step() + 1 if len(run.files) == 1 else max(x.last_step() for x in run.files) + 1
            chaotic = run.name.startswith("chaos_")
            roll = rng.random()
            if chaotic and roll < 0.01 and f.last_step() > 10:
                keep = rng.randint(1, len(f.segments) - 1)
                run.gen += 1
                run.rewrites += 1
                if rng.random() < 0.5:
                    f.truncate(keep)
                    counts["truncations"] += 1
                else:
                    cut = f.segments[:keep]
                    last = max((s.points[-1][1] for s in cut if s.points), default=-1)
                    f.replace(keep, run.records(last + 1, rng.randint(1, 20)))
                    counts["replacements"] += 1
                continue
            if not chaotic and roll < 0.015:
                kind = rng.choice(("crc", "garbage", "badlen"))
                f.append([damage_segment(kind)])
                counts[f"damage_{kind}"] += 1
            elif not chaotic and roll < 0.03:
                seg = run.records(first, 1)[0]
                f.append_torn(seg, rng.uniform(0.05, 0.3))
                counts["torn_writes"] += 1
                continue
            n = rng.randint(2000, 6000) if (not chaotic and roll > 0.9995) else rng.randint(1, 4)
            counts["bursts"] += n > 100
            f.append(run.records(first, n))
        for t_i, tag in enumerate(TORCH_TAGS):
            value = float(torch_step * 2 + t_i)
            torch_writer.add_scalar(tag, value, torch_step, new_style=t_i == 1)
            torch_points[tag].append((torch_step, value))
        torch_writer.flush()
        torch_step += 1
        time.sleep(max(0.0, tick - (time.monotonic() - t0 - elapsed)))
    torch_writer.close()
    model: dict[str, dict[str, list[tuple[int, float]]]] = {name: run.model() for name, run in raw.items()}
    model["torch_0"] = torch_points
    for run in raw.values():
        for f in run.files:
            f.close()
    counts["points_written"] = sum(len(p) for s in model.values() for p in s.values())
    rewrites = {name: run.rewrites for name, run in raw.items()}
    Path(out_path).write_text(json.dumps({"model": model, "counts": counts, "rewrites": rewrites}))


# ---------------------------------------------------------------------------------------------------
# server process


def server_main(cfg: dict[str, Any], port_q: Any, cmd_q: Any, res_q: Any) -> None:
    """Serve the logdir through the process-wide manager; restart when told; report at the end."""
    os.environ["LIGHTNING_STREAM_REGISTRY_DIR"] = cfg["registry"]
    logging.basicConfig(
        filename=cfg["server_log"], level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from lightning_stream import get_stream_server_manager

    manager = get_stream_server_manager()
    server = manager.acquire(
        host=HOST, port=None, replay_points=REPLAY_POINTS, subscriber_queue=SUBSCRIBER_QUEUE, keepalive_s=5.0
    )
    server.watch(cfg["logdir"])
    port_q.put(server.port)
    restarts: list[float] = []
    failures: list[str] = []
    while True:
        cmd = cmd_q.get()
        if cmd == "restart":
            t0 = time.perf_counter()
            try:
                manager.force_restart(server)
                restarts.append(time.perf_counter() - t0)
                if cfg["clear_aiohttp_cache"]:  # diagnostic: drop aiohttp's module-level middleware cache
                    import aiohttp.web_app

                    aiohttp.web_app._cached_build_middleware.cache_clear()
            except Exception as exc:  # reported, and the run fails
                failures.append(repr(exc))
        elif cmd == "stop":
            break
    watchdog_restarts = server.restarts - len(restarts)
    import gc

    from lightning_stream.hub import Hub

    gc.collect()
    live_hubs = sum(1 for o in gc.get_objects() if isinstance(o, Hub))  # 1: only the serving incarnation's
    manager.cleanup()
    res_q.put(
        {
            "restart_s": restarts,
            "restart_failures": failures,
            "watchdog_restarts": watchdog_restarts,
            "live_hubs": live_hubs,
        }
    )


# ---------------------------------------------------------------------------------------------------
# clients


@dataclass
class View:
    """One series as a client holds it: points, plus what it needs to check exactly-once delivery."""

    steps: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))
    rest_seq: int = -1  # stream points of this series in messages with seq <= this came from REST
    epoch_last: int | None = None  # last step accepted in the current sync epoch
    regressions: int = 0

    def snapshot(self, points: list[list[Any]], seq: int) -> None:
        self.steps = array("q", (int(p[0]) for p in points))
        self.values = array("d", (float(p[2]) for p in points))
        self.rest_seq = seq
        self.epoch_last = self.steps[-1] if self.steps else None

    def apply(self, step: int, value: float) -> None:
        """The hub's purge rule: a step <= the last one drops every held step >= it first."""
        if self.steps and step <= self.steps[-1]:
            cut = bisect.bisect_left(self.steps, step)
            del self.steps[cut:]
            del self.values[cut:]
        self.steps.append(step)
        self.values.append(value)


async def _lines(content: Any) -> AsyncIterator[bytes]:
    """Lines of a response body without aiohttp's line-length limit: one SSE frame of a 10,000-point
    hub message is ~1 MB on one ``data:`` line, and ``readline()`` raises ``LineTooLong`` past 512 KiB.
    Reading stops while the caller does not iterate (a stalled client applies TCP backpressure)."""
    pending = bytearray()
    start = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return
        pending += chunk
        while (nl := pending.find(b"\n", start)) >= 0:
            line = bytes(pending[:nl])
            del pending[: nl + 1]
            start = 0
            yield line
        start = len(pending)


class Client:
    """One SSE or WebSocket client with a behaviour; verifies what it receives as it goes."""

    def __init__(
        self,
        cid: str,
        url: str,
        kind: str,
        behaviour: str,
        run: str,
        tag: str,
        rng: random.Random,
        final: asyncio.Event,
    ) -> None:
        self.cid, self.url, self.kind, self.behaviour = cid, url, kind, behaviour
        self.run_glob, self.tag_glob = run, tag
        self.match_all = run == "*" and tag == "*"
        self.rng = rng
        self.views: dict[tuple[str, str], View] = {}
        self.last_seq: int | None = None
        self.final_event = final
        self.busy = False  # re-reading REST: the final phase must not end meanwhile
        self.last_message = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.duration = 0.0

    def _match(self, run: str, tag: str) -> bool:
        return fnmatchcase(run, self.run_glob) and fnmatchcase(tag, self.tag_glob)

    @property
    def final(self) -> bool:
        return self.final_event.is_set()

    def violation(self, text: str) -> None:
        self.counts["violations"] += 1
        if len(self.violations) < 8:
            self.violations.append(text)

    # ---- REST -----------------------------------------------------------------------------------

    async def sync(self, session: Any, baseline: int | None) -> int:
        """Load every matching series from REST; returns the seq to subscribe after."""
        if baseline is None:
            async with session.get(f"{self.url}/health") as resp:
                baseline = int((await resp.json())["seq"])
        async with session.get(f"{self.url}/api/runs") as resp:
            resp.raise_for_status()
            runs = await resp.json()
        listed: set[tuple[str, str]] = set()
        for info in runs:
            for tag in info["tags"]:
                key = (info["run"], tag)
                if not self._match(*key):
                    continue
                params = {"run": key[0], "tag": key[1]}
                async with session.get(f"{self.url}/api/scalars", params=params) as resp:
                    if resp.status == 404:
                        continue
                    resp.raise_for_status()
                    body = await resp.json()
                self.views.setdefault(key, View()).snapshot(body["points"], int(body["seq"]))
                self.counts["rest_points"] += len(body["points"])
                listed.add(key)
        for key, view in self.views.items():
            if key not in listed:  # the server does not hold it (yet): neither does a client
                view.snapshot([], baseline)
        self.counts["syncs"] += 1
        return baseline

    # ---- stream ---------------------------------------------------------------------------------

    def handle(self, kind: str, seq: int, body: dict[str, Any]) -> bool:
        """Check and apply one message; True when it was a reset (the caller re-syncs)."""
        self.last_message = time.monotonic()
        last = self.last_seq
        if kind == "reset":
            self.counts["resets"] += 1
            reason = str(body.get("reason", ""))
            why = "behind" if "fell more than" in reason else "evicted"
            if "ahead of" in reason or (last is not None and seq - last > 1_000_000):
                why = "restart"  # a new incarnation starts its seqs at the wall clock in µs
            self.counts[f"reset_{why}"] += 1
            if last is not None and seq < last:
                self.violation(f"reset seq {seq} < last seq {last}")
            self.last_seq = seq
            return True
        if last is not None:
            if seq <= last:
                self.violation(f"seq {seq} after {last}: duplicate or out of order")
            elif self.match_all and seq != last + 1:
                self.violation(f"gap: seq {seq} after {last} without a reset")
        self.last_seq = seq
        self.counts["messages"] += 1
        if kind != "scalars":
            return False
        for p in body["points"]:
            run, tag, step, value = p["run"], p["tag"], int(p["step"]), float(p["value"])
            if not self._match(run, tag):
                self.violation(f"point of {run}/{tag} does not match filter {self.run_glob}/{self.tag_glob}")
                continue
            view = self.views.get((run, tag))
            if view is None:
                view = self.views[(run, tag)] = View()
            if seq <= view.rest_seq:
                self.counts["overlap"] += 1  # already in the REST snapshot: not a delivery
                continue
            self.counts["delivered"] += 1
            if view.epoch_last is not None and step <= view.epoch_last:
                view.regressions += 1
                if not run.startswith("chaos_"):
                    self.violation(f"duplicate: {run}/{tag} step {step} after step {view.epoch_last} (seq {seq})")
            view.epoch_last = step
            view.apply(step, value)
        return False

    def due(self, when: float | None) -> bool:
        return when is not None and not self.final and time.monotonic() >= when

    async def read_sse(self, session: Any, since: int) -> str:
        import aiohttp

        headers = {"Last-Event-ID": str(since)}
        params = {"run": self.run_glob, "tag": self.tag_glob}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with session.get(f"{self.url}/stream", params=params, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                self.counts[f"http_{resp.status}"] += 1
                return "refused"
            self.connected()
            event, data, seq = "message", "", 0
            vanish_at, stall_at = self.plan()
            async for raw in _lines(resp.content):
                line = raw.decode().rstrip("\r")
                if line:
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif line.startswith("id:"):
                        seq = int(line[3:].strip())
                    continue
                if data and self.handle(event, seq, json.loads(data)):
                    await self.resync(session)
                event, data = "message", ""
                if self.due(stall_at):
                    await self.stall()
                    vanish_at, stall_at = self.plan()
                if self.due(vanish_at):
                    return "vanish"
            return "eof"

    async def read_ws(self, session: Any, since: int) -> str:
        import aiohttp

        async with session.ws_connect(f"{self.url}/ws", autoping=True) as ws:
            await ws.send_json({"op": "subscribe", "run": self.run_glob, "tag": self.tag_glob, "since": since})
            self.connected()
            vanish_at, stall_at = self.plan()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                body = json.loads(msg.data)
                kind = body.get("type")
                if kind == "error":
                    self.violation(f"ws error: {body.get('message')}")
                elif kind in ("scalars", "status", "reset") and self.handle(kind, int(body["seq"]), body):
                    await self.resync(session)
                if self.due(stall_at):
                    await self.stall()
                    vanish_at, stall_at = self.plan()
                if self.due(vanish_at):
                    return "vanish"
            return "eof"

    def connected(self) -> None:
        if self.counts["connects"]:
            self.counts["reconnects"] += 1
        self.counts["connects"] += 1

    def plan(self) -> tuple[float | None, float | None]:
        now = time.monotonic()
        b = self.behaviour
        vanish = now + self.rng.uniform(3, 20) if b in ("vanisher", "long") else None
        stall = now + self.rng.uniform(3, 15) if b == "staller" else None
        return vanish, stall

    async def stall(self) -> None:
        self.counts["stalls"] += 1
        await self._sleep_unless_final(self.rng.uniform(2, 30))

    async def resync(self, session: Any) -> None:
        self.busy = True
        try:
            await self._resync(session)
        finally:
            self.busy = False
            self.last_message = time.monotonic()

    async def _resync(self, session: Any) -> None:
        for attempt in range(50):
            try:
                await self.sync(session, self.last_seq)
                return
            except (OSError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                self.counts["sync_retries"] += 1
                if attempt == 49:
                    self.violation(f"could not re-read REST after a reset: {exc!r}")
                await asyncio.sleep(0.2)
            except Exception as exc:  # aiohttp.ClientError and friends
                self.counts["sync_retries"] += 1
                if attempt == 49:
                    self.violation(f"could not re-read REST after a reset: {exc!r}")
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        import aiohttp

        t0 = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as rest:
            while True:
                try:
                    self.last_seq = await self.sync(rest, None)
                    break
                except Exception:
                    self.counts["sync_retries"] += 1
                    await asyncio.sleep(0.3)
            while True:
                since = self.last_seq if self.last_seq is not None else 0
                outcome = "error"
                session = aiohttp.ClientSession()
                try:
                    reader = self.read_sse(session, since) if self.kind == "sse" else self.read_ws(session, since)
                    task = asyncio.ensure_future(reader)
                    idle = asyncio.ensure_future(self._idle_watch())
                    done, _ = await asyncio.wait({task, idle}, return_when=asyncio.FIRST_COMPLETED)
                    if task in done:
                        outcome = task.result()
                        idle.cancel()
                    else:
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
                        outcome = "done"
                except Exception as exc:
                    self.counts[f"conn_{type(exc).__name__}"] += 1
                finally:
                    await session.close()
                self.counts[f"end_{outcome}"] += 1
                if outcome == "done":
                    break
                if outcome == "vanish":
                    away = self.rng.uniform(0.2, 4) if self.behaviour == "vanisher" else self.rng.uniform(60, 150)
                    if self.behaviour == "long" and self.rng.random() < 0.5:
                        away = self.rng.uniform(0.2, 4)
                    await self._sleep_unless_final(away)
                elif outcome != "vanish":
                    await asyncio.sleep(0.2 + 0.3 * self.rng.random())
        self.duration = time.monotonic() - t0

    async def _sleep_unless_final(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.final_event.wait(), seconds)

    async def _idle_watch(self) -> None:
        """Ends once the final phase began and this connection has been idle for IDLE_DONE_S."""
        await self.final_event.wait()
        self.last_message = max(self.last_message, time.monotonic())
        while self.busy or time.monotonic() - self.last_message <= IDLE_DONE_S:  # noqa: ASYNC110 - a deadline that moves
            await asyncio.sleep(0.25)

    def verify(self, model: dict[str, dict[str, list[list[float]]]], rewrites: dict[str, int]) -> dict[str, Any]:
        missing = extra = wrong = 0
        for run, series in model.items():
            for tag, points in series.items():
                if not self._match(run, tag):
                    continue
                view = self.views.get((run, tag), View())
                want_steps = [int(p[0]) for p in points]
                want_values = [float(p[1]) for p in points]
                if list(view.steps) != want_steps or list(view.values) != want_values:
                    have = dict(zip(view.steps, view.values, strict=True))
                    want = dict(zip(want_steps, want_values, strict=True))
                    m = len(want.keys() - have.keys())
                    x = len(have.keys() - want.keys())
                    w = sum(1 for s in want.keys() & have.keys() if want[s] != have[s])
                    missing, extra, wrong = missing + m, extra + x, wrong + w
                    self.violation(f"{run}/{tag}: {m} missing, {x} extra, {w} wrong values (of {len(want)})")
                allowed = rewrites.get(run, 0)
                if run.startswith("chaos_") and view.regressions > allowed:
                    self.violation(
                        f"{run}/{tag}: went back {view.regressions} times, but the run was rewritten {allowed} times"
                    )
        for run, tag in self.views:
            if run not in model or tag not in model[run]:
                self.violation(f"{run}/{tag}: a series the writer never wrote")
        return {
            "cid": self.cid,
            "kind": self.kind,
            "behaviour": self.behaviour,
            "filter": f"{self.run_glob}/{self.tag_glob}",
            "counts": dict(self.counts),
            "missing": missing,
            "extra": extra,
            "wrong": wrong,
            "chaos_regressions": sum(v.regressions for (r, _), v in self.views.items() if r.startswith("chaos_")),
            "violations": self.violations,
        }


BEHAVIOURS = ("steady", "staller", "vanisher", "long", "steady", "vanisher")
FILTERS = (("*", "*"), ("*", "*"), ("clean_*", "loss"), ("*", "*"), ("chaos_*", "*"), ("*", "acc"))


def clients_main(cfg: dict[str, Any], index: int, url: str, final: Any, model_path: str, out_path: str) -> None:
    """Run this process's share of the clients; verify each against the writer's model at the end."""

    async def main() -> list[dict[str, Any]]:
        rng = random.Random(cfg["seed"] * 100 + index)
        final_event = asyncio.Event()
        clients = []
        for i in range(index, cfg["clients"], CLIENT_PROCESSES):
            run, tag = FILTERS[i % len(FILTERS)]
            kind = "sse" if i % 2 == 0 else "ws"
            behaviour = BEHAVIOURS[(i // 2) % len(BEHAVIOURS)]
            clients.append(
                Client(f"c{i:02d}", url, kind, behaviour, run, tag, random.Random(rng.random()), final_event)
            )

        async def watch_final() -> None:
            while not final.is_set():  # noqa: ASYNC110 - a multiprocessing event cannot be awaited
                await asyncio.sleep(0.2)
            final_event.set()

        watcher = asyncio.ensure_future(watch_final())
        await asyncio.gather(*(c.run() for c in clients))
        watcher.cancel()
        body = json.loads(await asyncio.to_thread(Path(model_path).read_text))
        return [c.verify(body["model"], body["rewrites"]) for c in clients]

    results = asyncio.run(main())
    Path(out_path).write_text(json.dumps(results))


# ---------------------------------------------------------------------------------------------------
# orchestrator


def server_matches_model(url: str, model: dict[str, dict[str, list[list[float]]]]) -> list[str]:
    """Differences between the server's REST view and the model (empty when identical)."""
    problems = []
    for run, series in model.items():
        for tag, points in series.items():
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            try:
                body = http_json(f"{url}/api/scalars?{query}", timeout=30)
            except urllib.error.HTTPError as exc:
                if points:
                    problems.append(f"{run}/{tag}: HTTP {exc.code}")
                continue
            have = [(int(p[0]), float(p[2])) for p in body["points"]]
            want = [(int(p[0]), float(p[1])) for p in points]
            if have != want:
                h, w = dict(have), dict(want)
                problems.append(
                    f"{run}/{tag}: {len(w.keys() - h.keys())} missing, {len(h.keys() - w.keys())} extra, "
                    f"{sum(1 for s in w.keys() & h.keys() if w[s] != h[s])} wrong (of {len(w)})"
                )
    return problems


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("lightning_stream_") and " " in line:
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of writing (default 600)")
    parser.add_argument("--clients", type=int, default=24, help="SSE + WS clients (default 24)")
    parser.add_argument("--restarts", type=int, default=None, help="forced restarts (default: 4, 2 under 60 s)")
    parser.add_argument("--clean-runs", type=int, default=4)
    parser.add_argument("--chaos-runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 s, 8 clients, 2 restarts")
    parser.add_argument(
        "--clear-aiohttp-cache",
        action="store_true",
        help="diagnostic: after each restart clear aiohttp.web_app._cached_build_middleware, "
        "whose keys (route handler, app) keep old server incarnations alive",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logdir, server log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.clients = 20.0, 8
    restarts = args.restarts if args.restarts is not None else (2 if args.duration < 60 else 4)

    tmp = Path(tempfile.mkdtemp(prefix="ls-soak-"))
    cfg: dict[str, Any] = {
        "logdir": str(tmp / "logs"),
        "registry": str(tmp / "registry"),
        "server_log": str(tmp / "server.log"),
        "duration": args.duration,
        "clients": args.clients,
        "clean_runs": args.clean_runs,
        "chaos_runs": args.chaos_runs,
        "seed": args.seed,
        "clear_aiohttp_cache": args.clear_aiohttp_cache,
    }
    Path(cfg["logdir"]).mkdir()
    print(f"soak: {args.duration:.0f} s, {args.clients} clients, {restarts} restarts, tmp {tmp}; load {load()}")
    sys.stdout.flush()
    ctx = mp.get_context("spawn")
    port_q, cmd_q, res_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=server_main, args=(cfg, port_q, cmd_q, res_q), name="soak-server")
    server.start()
    port = port_q.get(timeout=120)
    url = f"http://{HOST}:{port}"
    ready, stop, final = ctx.Event(), ctx.Event(), ctx.Event()
    model_path = str(tmp / "model.json")
    writer = ctx.Process(target=writer_main, args=(cfg, ready, stop, model_path), name="soak-writer")
    writer.start()
    if not ready.wait(180):
        raise SystemExit("soak: the writer did not start within 180 s")
    client_outs = [str(tmp / f"clients-{i}.json") for i in range(CLIENT_PROCESSES)]
    client_procs = [
        ctx.Process(
            target=clients_main, args=(cfg, i, url, final, model_path, client_outs[i]), name=f"soak-clients-{i}"
        )
        for i in range(CLIENT_PROCESSES)
    ]
    for p in client_procs:
        p.start()

    import psutil

    proc = psutil.Process(server.pid)
    rss: list[tuple[float, float]] = []
    lags: list[float] = []
    health_misses = 0
    t0 = time.monotonic()
    schedule = [args.duration * (i + 1) / (restarts + 1) for i in range(restarts)]
    client_rss: list[float] = []
    while (elapsed := time.monotonic() - t0) < args.duration:
        if schedule and elapsed >= schedule[0]:
            schedule.pop(0)
            cmd_q.put("restart")
        with contextlib.suppress(psutil.Error):
            rss.append((elapsed, proc.memory_info().rss / 2**20))
        with contextlib.suppress(psutil.Error):
            client_rss.append(sum(psutil.Process(p.pid).memory_info().rss for p in client_procs if p.pid) / 2**20)
        try:
            lags.append(float(http_json(f"{url}/health", timeout=2)["loop_lag_ms"]))
        except (OSError, ValueError, KeyError):
            health_misses += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - elapsed)))
    stop.set()
    writer.join(120)
    body = json.loads(Path(model_path).read_text())
    model, wcounts = body["model"], Counter(body["counts"])

    # the server must converge to the files' content (reader/watcher), before clients are judged
    deadline = time.monotonic() + 90
    while True:
        server_problems = server_matches_model(url, model)
        if not server_problems or time.monotonic() > deadline:
            break
        time.sleep(1)
    final.set()
    for p in client_procs:
        p.join(300)
    metrics = parse_metrics(http_text(f"{url}/metrics"))
    health = http_json(f"{url}/health")
    cmd_q.put("stop")
    sresult = res_q.get(timeout=60)
    server.join(60)
    results: list[dict[str, Any]] = []
    for path in client_outs:
        if Path(path).exists():
            results.extend(json.loads(Path(path).read_text()))
    log_lines = Path(cfg["server_log"]).read_text().splitlines() if Path(cfg["server_log"]).exists() else []

    # ---- report ------------------------------------------------------------------------------------
    failures: list[str] = []
    if len(results) != args.clients:
        failures.append(f"{args.clients - len(results)} client(s) did not report")
    if server_problems:
        failures.append(f"server REST differs from the files: {server_problems[:3]}")
    if sresult["live_hubs"] > 1:
        failures.append(
            f"{sresult['live_hubs'] - 1} old server incarnation(s) still referenced after restarts (hub and all its points)"
        )
    if sresult["restart_failures"]:
        failures.append(f"force_restart failed: {sresult['restart_failures'][:2]}")
    bad_clients = [r for r in results if r["violations"]]
    if bad_clients:
        failures.append(f"{len(bad_clients)} client(s) with violations")
    error_lines = [line for line in log_lines if " ERROR " in line or " CRITICAL " in line]
    if error_lines:
        failures.append(f"{len(error_lines)} ERROR line(s) in the server log")

    def total(key: str) -> int:
        return sum(int(r["counts"].get(key, 0)) for r in results)

    print()
    print(f"{'client':7} {'kind':4} {'behaviour':9} {'filter':13} {'delivered':>9} {'overlap':>7} {'rest':>8} "
          f"{'resets':>6} {'reconn':>6} {'stalls':>6} {'back':>4} {'verdict'}")  # fmt: skip
    for r in sorted(results, key=lambda r: r["cid"]):
        c = r["counts"]
        verdict = "ok" if not r["violations"] else f"FAIL: {r['violations'][0]}"
        print(
            f"{r['cid']:7} {r['kind']:4} {r['behaviour']:9} {r['filter']:13} {c.get('delivered', 0):>9} "
            f"{c.get('overlap', 0):>7} {c.get('rest_points', 0):>8} {c.get('resets', 0):>6} "
            f"{c.get('reconnects', 0):>6} {c.get('stalls', 0):>6} {r['chaos_regressions']:>4} {verdict}"
        )
    for r in bad_clients:
        for v in r["violations"][1:]:
            print(f"  {r['cid']}: {v}")
    print()
    n = len(rss)
    middle = [m for _, m in rss[n // 3 : 2 * n // 3]]
    last = [m for _, m in rss[2 * n // 3 :]]
    rss_line = "n/a"
    if middle and last:
        mid_med, last_med = statistics.median(middle), statistics.median(last)
        growth = last_med - mid_med
        allowed = max(16.0, 0.10 * mid_med)
        rss_line = (
            f"start {rss[0][1]:.0f} MiB, middle third median {mid_med:.0f}, last third median {last_med:.0f} "
            f"(growth {growth:+.1f} MiB, allowed {allowed:.0f}), max {max(m for _, m in rss):.0f}"
        )
        if args.duration >= 120 and growth > allowed:
            failures.append(f"server RSS still growing: {growth:+.1f} MiB from the middle to the last third")
        elif args.duration < 120:
            rss_line += " [not judged: run shorter than 120 s]"
    steps = max(1, n // 10)
    print("server RSS MiB over time: " + "  ".join(f"{t:.0f}s:{m:.0f}" for t, m in rss[::steps]))
    print(f"server RSS: {rss_line}")
    if client_rss:
        print(f"client processes RSS MiB (both): first {client_rss[0]:.0f}, max {max(client_rss):.0f}")
    print(
        f"loop lag ms (/health, {len(lags)} samples, {health_misses} missed during restarts): "
        f"p50 {percentile(lags, 50):.1f}  p99 {percentile(lags, 99):.1f}  max {max(lags, default=float('nan')):.1f}; "
        f"worst since last start {metrics.get('lightning_stream_loop_lag_max_seconds', float('nan')) * 1000:.0f}"
    )
    damage = {k: v for k, v in wcounts.items() if k.startswith("damage_")}
    print(
        f"writer: {wcounts['points_written']} points in the final files; {sum(damage.values())} damaged records "
        f"{dict(sorted(damage.items()))}, {wcounts['torn_writes']} torn writes, {wcounts['bursts']} bursts, "
        f"{wcounts['truncations']} truncations, {wcounts['replacements']} replacements, "
        f"{wcounts['runs_added']} run added, {wcounts['files_rotated']} file rotated"
    )
    reader_errors = {
        k.split('"')[1]: int(v) for k, v in metrics.items() if k.startswith("lightning_stream_reader_errors_total{")
    }
    print(
        f"server: {len(sresult['restart_s'])} forced restarts (each {', '.join(f'{s:.2f}' for s in sresult['restart_s'])} s), "
        f"{sresult['watchdog_restarts']} watchdog restarts; live hubs at the end {sresult['live_hubs']} (1 expected); "
        f"last incarnation: seq {health.get('seq')}, "
        f"points in {int(metrics.get('lightning_stream_points_in_total', 0))}, "
        f"resets {int(metrics.get('lightning_stream_resets_total', 0))}, "
        f"replay hits {int(metrics.get('lightning_stream_replay_hits_total', 0))}, reader errors {reader_errors}"
    )
    levels = Counter(line.split(" ")[2] for line in log_lines if len(line.split(" ")) > 2)
    print(f"server log: {dict(levels)}" + (f"; first ERROR: {error_lines[0][:300]}" if error_lines else ""))
    print(
        f"clients: {len(results)}; points delivered {total('delivered')}, REST points {total('rest_points')}, "
        f"overlap skipped {total('overlap')}, resets {total('resets')}, reconnects {total('reconnects')}, "
        f"stalls {total('stalls')}, REST syncs {total('syncs')}, violations {total('violations')}; "
        f"resets by cause: restart {total('reset_restart')}, fell behind {total('reset_behind')}, "
        f"past the replay buffer {total('reset_evicted')}"
    )
    print(f"load average at the end: {load()}")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = (
        f"{args.duration:.0f}s clients={len(results)} points={wcounts['points_written']} "
        f"delivered={total('delivered')} resets={total('resets')} reconnects={total('reconnects')} "
        f"restarts={len(sresult['restart_s']) + sresult['watchdog_restarts']}"
    )
    if failures:
        print(f"SOAK FAIL {summary}: " + "; ".join(failures))
        return 1
    print(f"SOAK PASS {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The hub: sequence numbers, replay exactness, resets, bounded fan-out, filters, budget, queries."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_stream.config import ServerConfig
from lightning_stream.hub import (
    MAX_GLOB_LEN,
    MAX_MESSAGE_POINTS,
    MAX_REPLAY_MESSAGES,
    Hub,
    HubClosed,
    Message,
    Subscription,
    validate_glob,
)
from lightning_stream.scalars import ScalarBatch
from lightning_stream.wire import payload_json, points_rows_json, ws_json

ROOT = Path(__file__).resolve().parent.parent


def batch(run: str, tag: str, steps: list[int], values: list[float] | None = None) -> ScalarBatch:
    vals = values if values is not None else [float(s) / 2 for s in steps]
    return ScalarBatch(run, tag, array("q", steps), array("d", [1.7e9 + s for s in steps]), array("d", vals))


def make_hub(**overrides: Any) -> Hub:
    return Hub(ServerConfig(**overrides))


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def drain(sub: Subscription) -> list[Message]:
    out = []
    while (msg := sub.get_nowait()) is not None:
        out.append(msg)
    return out


def points_of(msg: Message, sub: Subscription) -> list[tuple[str, str, int, float]]:
    text = payload_json(msg, sub)
    assert text is not None
    return [(p["run"], p["tag"], p["step"], p["value"]) for p in json.loads(text)["points"]]


# ---- sequence numbers, coalescing, encoding ----------------------------------------------------


async def test_points_ingested_in_one_tick_go_out_as_one_message() -> None:
    hub = make_hub(tick_s=0.01)
    sub = hub.subscribe()
    hub.ingest([batch("a", "loss", [1, 2])])
    hub.ingest([batch("a", "acc", [1]), batch("b", "loss", [7])])
    msg = await asyncio.wait_for(sub.get(), 5)
    assert (msg.kind, msg.seq, hub.seq) == ("scalars", 1, 1)
    assert points_of(msg, sub) == [
        ("a", "loss", 1, 0.5),
        ("a", "loss", 2, 1.0),
        ("a", "acc", 1, 0.5),
        ("b", "loss", 7, 3.5),
    ]
    assert ws_json(msg, sub) == '{"type":"scalars","seq":1,' + (payload_json(msg, sub) or "")[1:]
    hub.ingest([batch("a", "loss", [3])])
    assert (await asyncio.wait_for(sub.get(), 5)).seq == 2
    await hub.close()


def test_coalesced_ingest_goes_out_at_once_unless_many_subscribers_stretch_the_tick() -> None:
    hub = make_hub(tick_s=0.01)
    sub = hub.subscribe()
    hub.ingest([batch("a", "loss", [1, 2])], coalesced=True)  # one watcher read: no tick to wait for
    assert [m.npoints for m in drain(sub)] == [2]
    hub.ingest([batch("a", "loss", [3])])  # a publish(): waits for the tick (no loop here: for flush())
    assert drain(sub) == []
    crowd = [hub.subscribe() for _ in range(200)]
    assert hub.tick_s() > 0.01
    hub.ingest([batch("a", "loss", [4])], coalesced=True)  # many subscribers: the longer tick bounds fan-out
    assert drain(sub) == []
    hub.flush()
    assert [p[2] for m in drain(sub) for p in points_of(m, sub)] == [3, 4]
    for other in crowd:
        other.close()


def test_large_flush_is_split_into_bounded_messages_with_consecutive_seqs() -> None:
    hub = make_hub(replay_points=10**6)
    sub = hub.subscribe()
    hub.ingest([batch("a", "loss", list(range(2 * MAX_MESSAGE_POINTS + 5)))])
    hub.flush()
    msgs = drain(sub)
    assert [m.seq for m in msgs] == [1, 2, 3]
    assert [m.npoints for m in msgs] == [MAX_MESSAGE_POINTS, MAX_MESSAGE_POINTS, 5]
    steps = [p[2] for m in msgs for p in points_of(m, sub)]
    assert steps == list(range(2 * MAX_MESSAGE_POINTS + 5))


def test_batches_of_one_series_in_a_tick_are_merged_in_arrival_order() -> None:
    hub = make_hub()
    sub = hub.subscribe()
    hub.ingest([batch("a", "loss", [1]), batch("b", "loss", [1]), batch("a", "loss", [2])])
    hub.ingest([batch("a", "loss", [1])])  # a restart: what came before goes out, then a series reset
    hub.flush()
    msg, reset, after = drain(sub)
    assert [(b.run, list(b.steps)) for b in msg.batches] == [("a", [1, 2]), ("b", [1])]
    assert [p[2] for p in points_of(msg, sub)] == [1, 2, 1]
    assert reset.kind == "reset"
    assert json.loads(payload_json(reset, sub) or "")["from_step"] == 1
    assert [p[2] for p in points_of(after, sub)] == [1]
    assert list(hub.scalars("a", "loss").steps) == [1]


def test_replay_log_is_capped_in_messages_too() -> None:
    hub = make_hub(replay_points=10**6)
    for step in range(MAX_REPLAY_MESSAGES + 50):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    assert hub.stats()["replay_messages"] == MAX_REPLAY_MESSAGES
    first = hub.seq - MAX_REPLAY_MESSAGES
    assert drain(hub.subscribe(since=first))[0].seq == first + 1
    assert drain(hub.subscribe(since=first - 1))[0].kind == "reset"


def test_huge_ingest_without_subscribers_builds_no_json() -> None:
    hub = make_hub(replay_points=10**6)
    hub.ingest([batch("a", "loss", list(range(100_000)))])
    hub.flush()
    assert hub.seq == 100_000 // MAX_MESSAGE_POINTS
    assert all(not m._cache for m in hub._log)


def test_subscribers_matching_everything_share_one_encoding() -> None:
    hub = make_hub()
    subs = [hub.subscribe(), hub.subscribe("*", "*"), hub.subscribe("[ab]", "*")]
    hub.ingest([batch("a", "loss", [1]), batch("b", "loss", [1])])
    hub.flush()
    texts = [payload_json(drain(s)[0], s) for s in subs]
    assert texts[0] is texts[1] is texts[2]


def test_non_finite_values_are_sent_as_json_strings() -> None:
    hub = make_hub()
    sub = hub.subscribe()
    hub.ingest([batch("a", "loss", [1, 2, 3], [float("nan"), float("inf"), float("-inf")])])
    hub.flush()
    text = payload_json(drain(sub)[0], sub)
    assert text is not None
    values = [p["value"] for p in json.loads(text, parse_constant=pytest.fail)["points"]]
    assert values == ["NaN", "Infinity", "-Infinity"]
    rows = points_rows_json(hub.scalars("a", "loss"))
    assert json.loads(rows, parse_constant=pytest.fail) == [
        [1, 1.7e9 + 1, "NaN"],
        [2, 1.7e9 + 2, "Infinity"],
        [3, 1.7e9 + 3, "-Infinity"],
    ]


# ---- status messages ----------------------------------------------------------------------------


def test_status_follows_earlier_points_and_is_filtered_by_run() -> None:
    hub = make_hub()
    everything, only_b = hub.subscribe(), hub.subscribe(run_glob="b")
    hub.ingest([batch("a", "loss", [1])])
    hub.publish_status("a", "epoch", epoch=3)
    hub.publish_status("b", "finished")
    got = drain(everything)
    assert [(m.kind, m.seq) for m in got] == [("scalars", 1), ("status", 2), ("status", 3)]
    assert json.loads(payload_json(got[1], everything) or "") == {"run": "a", "state": "epoch", "epoch": 3}
    assert ws_json(got[1], everything) == '{"type":"status","seq":2,"run":"a","state":"epoch","epoch":3}'
    assert [m.seq for m in drain(only_b)] == [3]
    assert {r["run"]: r["status"] for r in hub.runs()} == {"a": "epoch", "b": "finished"}


@pytest.mark.parametrize(
    ("state", "fields", "match"),
    [
        ("running", {}, "not a run state"),
        ("epoch", {"seq": 1}, "clash"),
        ("epoch", {"obj": object()}, "not plain JSON"),
        ("epoch", {"loss": float("nan")}, "not plain JSON"),
    ],
)
def test_bad_status_is_rejected_with_a_fix(state: str, fields: dict[str, Any], match: str) -> None:
    hub = make_hub()
    with pytest.raises(ValueError, match=match):
        hub.publish_status("a", state, **fields)
    assert hub.seq == 0


# ---- replay -------------------------------------------------------------------------------------


def test_subscribe_since_replays_exactly_the_missed_messages_then_live() -> None:
    hub = make_hub()
    for step in range(5):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    sub = hub.subscribe(since=2)
    hub.ingest([batch("a", "loss", [5])])
    hub.flush()
    assert [m.seq for m in drain(sub)] == [3, 4, 5, 6]
    assert hub.stats()["replay_hits"] == 1


def test_subscribe_since_current_seq_gets_only_live_messages() -> None:
    hub = make_hub()
    hub.ingest([batch("a", "loss", [1])])
    hub.flush()
    sub = hub.subscribe(since=hub.seq)
    assert drain(sub) == []
    hub.publish_status("a", "finished")
    assert [m.seq for m in drain(sub)] == [2]


def test_since_older_than_the_buffer_gets_a_reset_then_live() -> None:
    hub = make_hub(replay_points=10)
    for step in range(30):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    assert hub.stats()["replay_messages"] == 10
    sub = hub.subscribe(since=5)
    reset = sub.get_nowait()
    assert reset is not None
    assert reset.kind == "reset"
    assert reset.seq == 30
    payload = json.loads(payload_json(reset, sub) or "")
    assert payload["seq"] == 30
    assert "no longer held" in payload["reason"]
    assert json.loads(ws_json(reset, sub) or "", object_pairs_hook=no_duplicate_keys) == {"type": "reset", **payload}
    hub.ingest([batch("a", "loss", [30])])
    hub.flush()
    assert [m.seq for m in drain(sub)] == [31]
    assert hub.stats()["replay_misses"] == 1
    # the oldest still-held message is replayable
    assert [m.seq for m in drain(hub.subscribe(since=21))] == list(range(22, 32))


def test_since_ahead_of_the_server_gets_a_reset() -> None:
    hub = make_hub()
    hub.ingest([batch("a", "loss", [1])])
    hub.flush()
    sub = hub.subscribe(since=99)
    msg = sub.get_nowait()
    assert msg is not None
    assert msg.kind == "reset"
    assert msg.seq == 1
    assert "ahead" in json.loads(payload_json(msg, sub) or "")["reason"]


@pytest.mark.parametrize("since", [-1, 1.5, "3", True])
def test_bad_since_is_rejected(since: Any) -> None:
    with pytest.raises(ValueError, match="since"):
        make_hub().subscribe(since=since)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("ingest"), st.sampled_from(["a", "b"]), st.sampled_from(["x", "y"]), st.integers(1, 30)),
            st.tuples(st.just("status"), st.sampled_from(["a", "b"])),
            st.tuples(st.just("flush")),
            st.tuples(st.just("subscribe"), st.integers(-1, 12), st.sampled_from(["*", "a"])),
            st.tuples(st.just("read"), st.integers(0, 10), st.integers(1, 5)),
        ),
        max_size=60,
    ),
    replay_points=st.integers(1, 120),
    queue=st.integers(1, 8),
)
def test_every_subscriber_sees_each_seq_at_most_once_in_order_and_never_silently_loses(
    ops: list[tuple[Any, ...]], replay_points: int, queue: int
) -> None:
    """Model check: received = exactly the published messages after `since` (filtered), except
    across an explicit reset, which jumps to the newest seq and is the only way to skip anything."""
    hub = make_hub(replay_points=replay_points, subscriber_queue=queue)
    published: dict[int, list[tuple[str, str, int]]] = {}  # seq -> points (status: run marker)
    step = 0
    subs: list[tuple[Subscription, list[Message], int]] = []
    seq_before = 0
    for op in ops:
        if op[0] == "ingest":
            _, run, tag, n = op
            hub.ingest([batch(run, tag, list(range(step, step + n)))])
            step += n
        elif op[0] == "status":
            hub.publish_status(op[1], "epoch")
        elif op[0] == "flush":
            hub.flush()
        elif op[0] == "subscribe":
            since = max(0, hub.seq - op[1])  # op[1] messages back; -1 is one ahead of the server
            subs.append((hub.subscribe(run_glob=op[2], since=since), [], since))
        elif op[0] == "read" and subs:
            sub, got, _ = subs[op[1] % len(subs)]
            for _ in range(op[2]):
                msg = sub.get_nowait()
                if msg is None:
                    break
                got.append(msg)
        for msg in list(hub._log):
            if msg.seq > seq_before:
                if msg.kind == "scalars":
                    published[msg.seq] = [(b.run, b.tag, s) for b in msg.batches for s in b.steps]
                else:
                    assert msg.payload is not None
                    published[msg.seq] = [(msg.payload["run"], "<status>", -1)]
        seq_before = hub.seq
    for sub, got, since in subs:
        got.extend(drain(sub))
        expected_from = since + 1
        last_seen = 0
        for index, msg in enumerate(got):
            if msg.kind == "reset":
                assert msg.seq >= last_seen  # a reset never goes back before what was delivered
                if index > 0:  # past the subscribe-time check, a reset means messages were really skipped
                    assert msg.seq >= expected_from
                expected_from = msg.seq + 1
                continue
            last_seen = msg.seq
            assert msg.seq >= expected_from
            skipped = range(expected_from, msg.seq)
            # a skipped seq is only one whose content this filter does not match
            assert all(not any(sub.matches(run) for run, _, _ in published[s]) for s in skipped)
            expected_from = msg.seq + 1
            want = [p for p in published[msg.seq] if sub.matches(p[0])]
            if msg.kind == "scalars":
                assert [(r, t, s) for r, t, s, _ in points_of(msg, sub)] == want
        assert all(not any(sub.matches(r) for r, _, _ in published[s]) for s in range(expected_from, hub.seq + 1))


# ---- slow subscribers ---------------------------------------------------------------------------


def test_subscriber_falling_behind_gets_one_reset_and_continues_from_newest() -> None:
    hub = make_hub(subscriber_queue=4)
    slow = hub.subscribe()
    for step in range(10):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    got = drain(slow)
    assert [(m.kind, m.seq) for m in got] == [("reset", 10)]
    assert "behind" in json.loads(payload_json(got[0], slow) or "")["reason"]
    assert hub.stats()["resets"] == 1
    hub.ingest([batch("a", "loss", [10])])
    hub.flush()
    assert [(m.kind, m.seq) for m in drain(slow)] == [("scalars", 11)]
    assert hub.stats()["resets"] == 1


def test_subscriber_exactly_at_the_queue_bound_loses_nothing() -> None:
    hub = make_hub(subscriber_queue=4)
    sub = hub.subscribe()
    for step in range(4):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    assert [m.seq for m in drain(sub)] == [1, 2, 3, 4]
    assert hub.stats()["resets"] == 0


def test_replay_backlog_does_not_count_against_the_live_queue_bound() -> None:
    hub = make_hub(subscriber_queue=2, replay_points=1000)
    for step in range(50):
        hub.ingest([batch("a", "loss", [step])])
        hub.flush()
    sub = hub.subscribe(since=0)
    assert [m.seq for m in drain(sub)] == list(range(1, 51))


async def test_stalled_subscribers_neither_grow_memory_nor_slow_a_live_one() -> None:
    hub = make_hub(subscriber_queue=16, replay_points=2000, tick_s=0.001)
    live = hub.subscribe()
    received: list[int] = []

    async def reader() -> None:
        while True:
            msg = await live.get()
            assert msg.kind == "scalars"
            received.append(msg.seq)

    task = asyncio.create_task(reader())

    async def publish(count: int, start: int) -> None:
        for step in range(start, start + count):
            hub.ingest([batch("a", "loss", [step]), batch("b", "acc", [step])])
            hub.flush()
            await asyncio.sleep(0)  # let the live reader run, as the loop would between ticks

    tracemalloc.start()
    try:
        await publish(1200, 0)  # warm up: the replay log (1000 messages of 2 points) is at its bound
        gc.collect()
        before = tracemalloc.take_snapshot()
        stalled = [hub.subscribe() for _ in range(200)]
        await publish(2000, 1200)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # 200 stalled subscribers while 2000 messages went by: only their fixed-size objects and
    # the series' new points (2000 x 2 x 24 bytes) remain; a queue per subscriber would be ~100 MB.
    assert grown < 400_000, f"memory grew by {grown} bytes"
    assert received == list(range(1, 3201))
    assert hub.stats()["resets"] == 0
    assert hub.stats()["replay_points"] <= 2000
    for sub in stalled:
        assert [m.kind for m in drain(sub)] == ["reset"]
    assert hub.stats()["resets"] == 200
    assert hub.stats()["subscribers"] == 201
    task.cancel()
    await hub.close()


# ---- filters ------------------------------------------------------------------------------------


def test_filters_select_runs_and_tags_by_glob() -> None:
    hub = make_hub()
    val = hub.subscribe(run_glob="version_*", tag_glob="val/*")
    hub.ingest(
        [batch("version_0", "val/loss", [1]), batch("version_0", "train/loss", [1]), batch("other", "val/loss", [1])]
    )
    hub.ingest([batch("other", "train/loss", [2])])
    hub.flush()
    msgs = drain(val)
    assert len(msgs) == 1
    assert points_of(msgs[0], val) == [("version_0", "val/loss", 1, 0.5)]
    assert msgs[0].points_for(val) == 1
    assert val.matches("version_3/sub", "val/acc")  # '*' matches '/' as in fnmatch


def test_messages_matching_nothing_are_skipped() -> None:
    hub = make_hub()
    sub = hub.subscribe(run_glob="b")
    hub.ingest([batch("a", "loss", [1])])
    hub.flush()
    hub.ingest([batch("b", "loss", [1])])
    hub.flush()
    assert [m.seq for m in drain(sub)] == [2]


@pytest.mark.parametrize(
    ("glob", "match"),
    [
        ("", "empty"),
        ("train[", "unclosed"),
        ("a[!", "unclosed"),
        ("[]", "unclosed"),
        ("x" * (MAX_GLOB_LEN + 1), "limit"),
        ("a\nb", "control"),
        (3, "string"),
    ],
)
def test_bad_globs_are_rejected_with_a_fix(glob: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_glob(glob)
    with pytest.raises(ValueError, match=match):
        make_hub().subscribe(tag_glob=glob)


@pytest.mark.parametrize("glob", ["*", "train/*", "[[]x", "[]]", "[!a]b", "v?", "a]b", "x" * MAX_GLOB_LEN])
def test_good_globs_pass(glob: str) -> None:
    assert validate_glob(glob) == glob


# ---- storage, budget, queries -------------------------------------------------------------------


def test_purged_points_disappear_from_rest_and_are_counted() -> None:
    hub = make_hub()
    hub.ingest([batch("a", "loss", list(range(100)))])
    hub.ingest([batch("a", "loss", [40, 41])])  # resumed from a checkpoint at step 40
    assert list(hub.scalars("a", "loss").steps) == [*range(40), 40, 41]
    stats = hub.stats()
    assert (stats["points_in"], stats["points_held"], stats["points_purged"]) == (102, 42, 60)


def test_memory_budget_decimates_old_points_but_keeps_newest_and_extrema() -> None:
    budget = 1024 * 1024
    hub = make_hub(memory_budget_bytes=budget)
    for run in ("a", "b"):
        for start in range(0, 100_000, 5000):
            steps = list(range(start, start + 5000))
            values = [float(s % 100) for s in steps]
            if start == 10_000:
                values[7] = 1e6  # an old spike in each series
            hub.ingest([batch(run, "loss", steps, values)])
    stats = hub.stats()
    assert stats["points_held"] <= budget // 24
    assert stats["bytes_held"] <= budget * 1.1
    assert stats["points_decimated"] == 200_000 - stats["points_held"]
    for run in ("a", "b"):
        held = hub.scalars(run, "loss")
        assert held.steps[0] == 0
        assert held.steps[-1] == 99_999
        assert max(held.values) == 1e6
        assert min(held.values) == 0.0
        assert list(held.steps[-1000:]) == list(range(99_000, 100_000))


def test_many_short_series_over_budget_are_kept_at_their_floor() -> None:
    hub = make_hub(memory_budget_bytes=1024 * 1024)  # 43,690 points
    for i in range(1000):
        hub.ingest([batch(f"run_{i}", "loss", list(range(60)))])
    stats = hub.stats()
    assert stats["points_held"] == 60_000  # series shorter than MIN_DECIMATE are never thinned
    assert stats["decimations"] == 0
    hub.ingest([batch("big", "loss", list(range(100_000)))])
    held = hub.scalars("big", "loss")
    assert len(held) < 50_000
    assert held.steps[-1] == 99_999


def test_scalars_since_step_and_limit() -> None:
    hub = make_hub()
    hub.ingest([batch("a", "loss", [0, 5, 10, 15])])
    assert list(hub.scalars("a", "loss", since_step=5).steps) == [10, 15]
    assert list(hub.scalars("a", "loss", since_step=-1, limit=2).steps) == [0, 5]
    assert list(hub.scalars("a", "loss", limit=0).steps) == []
    with pytest.raises(ValueError, match="limit"):
        hub.scalars("a", "loss", limit=-1)


def test_unknown_run_or_tag_raises_key_error_naming_what_exists() -> None:
    hub = make_hub()
    hub.ingest([batch("a", "loss", [1])])
    with pytest.raises(KeyError, match="unknown run 'b'; known runs: 'a'"):
        hub.scalars("b", "loss")
    with pytest.raises(KeyError, match="no tag 'acc'; its tags: 'loss'"):
        hub.scalars("a", "acc")
    with pytest.raises(KeyError):
        hub.tags("b")


def test_runs_lists_noted_and_ingested_runs() -> None:
    hub = make_hub()
    hub.note_run("empty", "/logs/empty")
    hub.note_run("a", "/logs/a")
    hub.ingest([batch("a", "loss", [1, 9]), batch("a", "acc", [4])])
    hub.note_run("a", None)  # does not forget the logdir
    hub.note_hparams("a", {"lr": 0.1})
    assert hub.runs() == [
        {
            "run": "a",
            "logdir": "/logs/a",
            "tags": ["acc", "loss"],
            "last_step": 9,
            "last_wall_time": 1.7e9 + 9,
            "status": None,
            "hparams": {"lr": 0.1},
        },
        {
            "run": "empty",
            "logdir": "/logs/empty",
            "tags": [],
            "last_step": None,
            "last_wall_time": None,
            "status": None,
            "hparams": {},
        },
    ]
    assert hub.has_run("empty")
    assert not hub.has_run("nope")
    assert hub.tags("a") == ["acc", "loss"]


# ---- lifecycle ----------------------------------------------------------------------------------


async def test_close_ends_waiting_and_later_gets() -> None:
    hub = make_hub()
    sub = hub.subscribe()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await hub.close()
    with pytest.raises(HubClosed):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(HubClosed):
        await sub.get()
    with pytest.raises(HubClosed):
        hub.subscribe()
    assert hub.stats()["subscribers"] == 0


async def test_subscription_close_wakes_its_reader_and_detaches() -> None:
    hub = make_hub()
    sub = hub.subscribe()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(HubClosed):
        await asyncio.wait_for(waiting, 5)
    assert hub.stats()["subscribers"] == 0


async def test_cancelled_get_leaves_the_subscription_usable() -> None:
    hub = make_hub(tick_s=0.001)
    sub = hub.subscribe()
    with pytest.raises(asyncio.TimeoutError):  # the builtin TimeoutError from 3.11 on, not on 3.10
        await asyncio.wait_for(sub.get(), 0.01)
    hub.ingest([batch("a", "loss", [1])])
    assert (await asyncio.wait_for(sub.get(), 5)).seq == 1


def test_memory_benchmark_quick_run_works() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_hub_memory.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "bytes/point" in result.stdout


async def test_resume_against_a_restarted_hub_gets_a_reset_not_silence() -> None:
    from lightning_stream.config import ServerConfig
    from lightning_stream.hub import Hub

    old = Hub(ServerConfig(), seq_start=1_000)
    old.publish_status("r", "started")
    last_seen = old.seq
    await old.close()
    new = Hub(ServerConfig(), seq_start=2_000)  # a later start: every new seq is above every old one
    new.publish_status("r", "epoch", epoch=1)
    sub = new.subscribe(since=last_seen)
    first = await asyncio.wait_for(sub.get(), 5)
    assert first.kind == "reset"
    await new.close()


def test_tick_grows_with_subscribers_up_to_a_cap() -> None:
    from lightning_stream.config import ServerConfig
    from lightning_stream.hub import MAX_TICK_S, Hub

    hub = Hub(ServerConfig(tick_s=0.005))
    assert hub.tick_s() == 0.005
    subs = [hub.subscribe() for _ in range(200)]
    assert hub.tick_s() == pytest.approx(0.02)
    subs += [hub.subscribe() for _ in range(2000)]
    assert hub.tick_s() == MAX_TICK_S
    for sub in subs:
        sub.close()
    assert hub.tick_s() == 0.005


def test_broadcast_gap_grows_with_subscribers_up_to_a_cap() -> None:
    from lightning_stream.hub import BROADCAST_SENDS_PER_S, MAX_BROADCAST_GAP_S

    hub = make_hub()
    assert hub.broadcast_gap_s() == 0.0  # nobody to send to: no reason to wait
    subs = [hub.subscribe() for _ in range(5)]
    assert hub.broadcast_gap_s() == pytest.approx(5 / BROADCAST_SENDS_PER_S) == pytest.approx(0.08)
    subs += [hub.subscribe() for _ in range(5)]
    assert hub.broadcast_gap_s() == pytest.approx(10 / BROADCAST_SENDS_PER_S) == pytest.approx(0.16)
    subs += [hub.subscribe() for _ in range(100)]
    assert hub.broadcast_gap_s() == MAX_BROADCAST_GAP_S
    for sub in subs:
        sub.close()
    assert hub.broadcast_gap_s() == 0.0


def test_a_large_ingest_is_held_once_not_copied_into_the_series() -> None:
    hub = make_hub(replay_points=1_000)
    scan = [batch(f"run_{r}", f"tag_{t}", list(range(20_000))) for r in range(5) for t in range(2)]
    size = sum(len(b) for b in scan) * 24
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        hub.ingest(scan)
        gc.collect()
        after_ingest = tracemalloc.get_traced_memory()[0]
        del scan  # what a watcher does once the hub has the points
        hub.flush()
        gc.collect()
        after_flush = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # The series adopt the scan's arrays (a copy would be +4.8 MB); flushing leaves them plus a
    # replay log of 1,000 points.
    assert after_ingest - before < size // 20, f"ingest of {size} bytes grew memory by {after_ingest - before}"
    assert after_flush - before < size + size // 10
    assert hub.stats()["points_held"] == 200_000


async def test_replayed_messages_keep_the_points_as_ingested_after_the_series_moves_on() -> None:
    hub = make_hub()
    start = hub.seq
    live = hub.subscribe()
    first = batch("a", "loss", list(range(100)))
    hub.ingest([first])  # a new series adopts these arrays; the message below shares them
    hub.flush()
    hub.ingest([batch("a", "loss", [50, 51], [-1.0, -2.0])])  # a restart purges steps >= 50
    hub.ingest([batch("a", "loss", [52, 53])])
    hub.flush()
    hub.ingest([batch("a", "loss", [10], [-3.0])])
    hub.flush()
    expected = (
        [("a", "loss", s, s / 2) for s in range(100)]
        + [("a", "loss", 50, -1.0), ("a", "loss", 51, -2.0), ("a", "loss", 52, 26.0), ("a", "loss", 53, 26.5)]
        + [("a", "loss", 10, -3.0)]
    )
    replay = hub.subscribe(since=start)
    for sub in (live, replay):
        messages = drain(sub)
        assert [p for m in messages if m.kind == "scalars" for p in points_of(m, sub)] == expected
        resets = [json.loads(payload_json(m, sub) or "") for m in messages if m.kind == "reset"]
        assert [(r["run"], r["tag"], r["from_step"]) for r in resets] == [("a", "loss", 50), ("a", "loss", 10)]
    assert list(first.steps) == list(range(100))
    held = hub.scalars("a", "loss")
    assert list(held.steps) == list(range(11))
    assert list(held.values) == [s / 2 for s in range(10)] + [-3.0]


def test_the_server_modules_do_not_import_numpy() -> None:
    code = (
        "import sys, lightning_stream.server, lightning_stream.watcher, lightning_stream.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", "numpy costs ~15 MiB of RSS at import: import it lazily where needed"


def test_a_series_going_back_gets_a_reset_for_its_subscribers_only_and_a_relogged_step_none() -> None:
    hub = make_hub()
    loss, acc = hub.subscribe(tag_glob="loss"), hub.subscribe(tag_glob="acc")
    hub.ingest([batch("a", "loss", [0, 1, 2, 3]), batch("a", "acc", [0, 1])])
    hub.flush()
    hub.ingest([batch("a", "loss", [3])])  # the same step logged again replaces one point: no reset
    hub.ingest([batch("a", "acc", [1])])
    hub.flush()
    assert [m.kind for m in drain(loss)] == ["scalars", "scalars"]
    hub.ingest([batch("a", "loss", [4, 5, 2, 3])])  # goes back inside one batch (one file: a purge_step writer)
    hub.flush()
    messages = drain(loss)
    assert [m.kind for m in messages] == ["scalars", "reset", "scalars"]
    assert [p[2] for p in points_of(messages[0], loss)] == [4, 5]
    assert json.loads(payload_json(messages[1], loss) or "") == {
        "seq": messages[1].seq,
        "reason": json.loads(payload_json(messages[1], loss) or "")["reason"],
        "run": "a",
        "tag": "loss",
        "from_step": 2,
    }
    assert [p[2] for p in points_of(messages[2], loss)] == [2, 3]
    assert all(m.kind == "scalars" for m in drain(acc))  # not acc's series
    assert hub.stats()["series_resets"] == 1
    assert list(hub.scalars("a", "loss").steps) == [0, 1, 2, 3]


def test_held_counts_the_points_of_one_series_and_is_zero_for_what_is_unknown() -> None:
    hub = make_hub()
    hub.ingest([batch("r", "loss", [0, 1, 2]), batch("r", "acc", [5])])
    hub.flush()
    assert hub.held("r", "loss") == 3
    assert hub.held("r", "acc") == 1
    assert hub.held("r", "nope") == 0
    assert hub.held("nope", "loss") == 0

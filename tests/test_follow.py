"""The I/O-free follower: what ``stream``/``astream`` do next after each outcome (no sockets needed)."""

from __future__ import annotations

import pytest

from lightning_stream.errors import ClientError
from lightning_stream.follow import Follower, Following, Open, Probe, Read, Reread, Sleep, Stop

URL = "http://127.0.0.1:1"


def following(**kw: object) -> Following:
    return Following(URL, Follower("*", "loss", None, None), duration=kw.get("duration"), retry_s=30.0)  # type: ignore[arg-type]


def test_the_first_connection_is_not_retried() -> None:
    f = following()
    assert f.next() == Open("/stream?tag=loss&format=columns", {})
    with pytest.raises(ClientError, match="refused"):
        f.failed("refused")


def test_a_drop_reconnects_after_a_health_probe_with_last_event_id() -> None:
    f = following()
    assert isinstance(f.next(), Open)
    f.opened()
    assert isinstance(f.next(), Read)
    assert f.line(b"id: 7\n") == []
    f.line(b"event: scalars\n")
    points = f.line(b'data: {"points": [{"run": "a", "tag": "loss", "step": 1, "wall_time": 1.0, "value": 2.0}]}\n')
    assert [(p.run, p.step, p.seq) for p in points + f.line(b"\n")] == [("a", 1, 7)]
    f.line(b"")  # the server closed the stream
    assert f.next() == Probe()
    f.failed("refused")  # not the first connection: back off, do not raise
    assert isinstance(f.next(), Sleep)
    assert f.next() == Probe()
    f.probed({"uptime_s": 1e9, "seq": 7})  # same server: resume by seq
    assert f.next() == Open("/stream?tag=loss&format=columns", {"Last-Event-ID": "7"})


def test_a_restarted_server_is_read_again_over_rest_and_a_past_deadline_stops() -> None:
    f = following(duration=3600)
    f.opened()
    f.line(b"id: 7\n")
    f.line(b"event: scalars\n")
    f.line(b'data: {"points": []}\n')
    f.line(b"\n")
    f.dropped("dropped")
    assert f.next() == Probe()
    f.probed({"uptime_s": 0.0, "seq": 3})  # younger than our connection: its seqs are new
    assert f.next() == Open("/stream?tag=loss&format=columns", {})  # no Last-Event-ID
    f.opened()
    assert f.next() == Reread()
    f.deadline = 0.0
    assert f.follower.reset_seq == 3
    f.follower.reset_seq = None  # what the driver's re-read does when it is done
    assert f.next() == Stop()

"""One SSE stream's logic over two nodes' logs, without a network: the reader is a stand-in
that reads real EventLogs. Events of both logs come out merged by time, each with the id
that resumes after it; a position below a log's floor is a gap; a tail start sends nothing
that was there before it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import pytest

from node.realtime import stream
from node.realtime.feed_log import EventLog, Read, Subject, decode_position
from node.realtime.stream import Follower, StreamTally

T = ("t", "ns")


class TwoLogs:
    """The FeedReader's read over two in-memory logs."""

    def __init__(self) -> None:
        self.logs = {"n1": EventLog(1, max_events=4), "n2": EventLog(7)}

    def members(self) -> dict[str, str]:
        return {node: node for node in self.logs}

    async def read(
        self, subject: Subject, prefix: str, position: Mapping[str, int]
    ) -> dict[str, Read]:
        return {
            node: log.read(subject, prefix, position.get(node, 0), 1000)
            for node, log in self.logs.items()
        }


def put(log: EventLog, name: str, value: int, at_ms: int, tenant: str = "t") -> None:
    log.append([(tenant, "ns", name, value, 1, False, value)], at_ms)


def frames_of(follower: Follower) -> list[dict[str, object]]:
    out = []
    for frame in asyncio.run(follower.next_frames()):
        fields = dict(line.split(": ", 1) for line in frame.strip().split("\n"))
        out.append({**fields, "data": json.loads(fields["data"])})
    return out


def test_a_tail_start_then_both_logs_merged_by_time_each_with_its_resume_id() -> None:
    reader = TwoLogs()
    put(reader.logs["n1"], "old", 1, 500)  # before the stream: not sent
    follower = Follower(reader, T, "", None, StreamTally(10))  # type: ignore[arg-type]
    assert frames_of(follower) == []
    put(reader.logs["n1"], "a", 1, 1000)
    put(reader.logs["n2"], "b", 1, 900)
    put(reader.logs["n1"], "c", 2, 1100)
    put(reader.logs["n2"], "x", 9, 950, tenant="u")  # another tenant's: never sent
    frames = frames_of(follower)
    assert [f["data"]["name"] for f in frames] == ["b", "a", "c"]  # type: ignore[index]
    # each id resumes right after its own event: re-reading from "a"'s id yields only "c"
    resumed = Follower(reader, T, "", decode_position(str(frames[1]["id"])), StreamTally(10))  # type: ignore[arg-type]
    assert [f["data"]["name"] for f in frames_of(resumed)] == ["c"]  # type: ignore[index]
    assert frames_of(follower) == []  # nothing new


def test_a_position_below_a_logs_floor_is_a_gap_then_what_is_held() -> None:
    reader = TwoLogs()
    n1 = reader.logs["n1"]
    put(n1, "a", 1, 1000)
    start = {"n1": n1.head(T), "n2": reader.logs["n2"].head(T)}
    for i in range(6):  # n1 holds 4 events: two of these are gone
        put(n1, "a", i + 2, 1100 + i)
    tally = StreamTally(10)
    frames = frames_of(Follower(reader, T, "", start, tally))  # type: ignore[arg-type]
    assert frames[0]["event"] == "gap" and frames[0]["data"]["node"] == "n1"  # type: ignore[index]
    assert [f["data"]["value"] for f in frames[1:]] == [4, 5, 6, 7]  # type: ignore[index]
    assert tally.gaps == 1 and tally.sent == 4


def test_an_older_state_of_a_counter_is_not_sent_and_memory_of_sent_ones_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream, "REMEMBER_MAX", 2)
    reader = TwoLogs()
    n1, n2 = reader.logs["n1"], reader.logs["n2"]
    follower = Follower(reader, T, "", {}, StreamTally(10))  # type: ignore[arg-type]
    put(n1, "a", 5, 1000)
    put(n2, "a", 3, 1001)  # an older state, from another log: not sent
    put(n2, "b", 1, 1002)
    put(n2, "c", 1, 1003)
    assert [(f["data"]["name"], f["data"]["value"]) for f in frames_of(follower)] == [  # type: ignore[index]
        ("a", 5),
        ("b", 1),
        ("c", 1),
    ]
    assert follower.tally.stale == 1 and list(follower.last_sent) == ["b", "c"]  # a forgotten
    put(n2, "a", 4, 60_000)
    put(n2, "d", 1, 60_001)  # the others are past REMEMBER_MS by now: forgotten
    assert [f["data"]["value"] for f in frames_of(follower)] == [4, 1]  # type: ignore[index]
    assert list(follower.last_sent) == ["a", "d"]

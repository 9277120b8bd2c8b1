"""Window catch-up (node/realtime/buckets.py) carries a minute's change past msgpack's range.

A counter that swings from INT64_MAX to INT64_MIN within a minute nets -(2^64 - 1) in that
minute's bucket. A late replica takes the buckets before its cut from another in a REALTIME
BUCKETS reply: that reply must carry such a bucket exactly, or the late replica stays
incomplete for the older windows of every counter of the shard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdt import PNCounter
from node.cluster import wire
from node.cluster.wire import ProtocolError
from node.realtime.buckets import SETTLE_MS, export, parse
from node.realtime.fanout import Fanout
from node.realtime.query import query_from_wire
from node.realtime.service import Realtime
from node.realtime.windows import Windows
from tests.node.realtime.test_buckets import MINUTE, SHARDS, Clock, Cluster, changes, feed, node

INT64_MAX = 2**63 - 1
SWING = -(2**64 - 1)


class WireLink:
    """Another replica's answers, through msgpack as a peer link sends them."""

    def __init__(self, other: Realtime) -> None:
        self.other = other

    async def call(self, kind: int, body: Any, timeout: float) -> Any:
        reply = self.other.answer(query_from_wire(body, SHARDS)).to_wire()
        return wire.decode(wire.encode(wire.REPLY, 1, reply))[2]


class Pool:
    def __init__(self, other: Realtime) -> None:
        self.other = other

    def link(self, address: str) -> WireLink:
        return WireLink(self.other)


def test_a_late_replica_takes_a_swing_bucket_exactly() -> None:
    early_clock, late_clock = Clock(100 * MINUTE), Clock(105 * MINUTE + 30_000)
    _, early = node(early_clock)
    early.observe(early_clock.ms)  # empty store: observed since ever
    late_store, late = node(late_clock)
    for name in ("ab", "abc"):  # it holds counters of both shards: it observes them late
        late_store.load_durable([(("t", "ns", name), PNCounter.from_slot("a:1", 9, 0))])
    late.observe(late_clock.ms)
    feed(early, 101, "ab", INT64_MAX)
    feed(early, 102, "ab", SWING)
    feed(early, 103, "abc", 4)  # another counter, in the other shard
    late_clock.ms = 106 * MINUTE + SETTLE_MS
    fanout = Fanout(Cluster(), Pool(early), late)  # type: ignore[arg-type]
    asyncio.run(fanout.catch_up())
    assert late.since == {0: 0, 1: 0} and late.caught_up == {0, 1}
    assert changes(late) == changes(early) == {0: {"ab": INT64_MAX + SWING}, 1: {"abc": 4}}


def test_exported_buckets_parse_back_exactly() -> None:
    windows = Windows()
    for minute, delta in [(5, SWING), (6, 2**64 + 1), (7, 3)]:
        windows.add(0, "t", "ns", "x", minute, delta)
    sent = wire.decode(wire.encode(wire.REPLY, 1, export(windows, 0, 0, 10)))[2]
    assert parse(sent, 10) == {
        ("t", "ns"): [(5, {"x": SWING}), (6, {"x": 2**64 + 1}), (7, {"x": 3})]
    }


@pytest.mark.parametrize("delta", ["3", str(-(2**63)), "-0", "+" + str(2**64), 1.0, None])
def test_a_delta_in_any_other_form_is_refused(delta: object) -> None:
    with pytest.raises(ProtocolError):
        parse([["t", "ns", [[5, ["a", delta]]]]], 10)

"""The publisher (one node per shard publishes, takeovers republish) and the sink pump (a
bounded backlog that survives a sink outage), with the clock and the sink as arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgpack
import pytest

from node.base.keys import Key
from node.cluster.wire import ProtocolError
from node.realtime import feed_wire
from node.realtime.changes import Change
from node.realtime.feed_log import MAX_VERSION, Event, EventLog
from node.realtime.publisher import Publisher
from node.realtime.sinks import SinkError, SinkPump

A: Key = ("t", "ns", "a")  # shard 0
B: Key = ("t", "ns", "b")  # shard 1


class Offered:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def offer(self, events: Sequence[Event]) -> None:
        self.events += events


def publisher_of(owned: set[int], values: dict[Key, int]) -> tuple[Publisher, Offered]:
    sink = Offered()
    publisher = Publisher(
        EventLog(1),
        4,
        lambda shard: shard in owned,
        values.get,
        [sink],
        version_of=lambda key, shard: values.get(key),
        min_interval_ms=100,
        recall_ms=10_000,
    )
    publisher.tick(0)  # a first tick learns which shards this node coordinates
    return publisher, sink


def test_only_the_coordinator_of_a_shard_publishes_its_changes() -> None:
    publisher, sink = publisher_of({0}, {})
    publisher.on_changes([Change(A, 0, 0, 3), Change(B, 1, 0, 4)], 1000)  # published at once
    assert [(e.name, e.value, e.change) for e in sink.events] == [("a", 3, 3)]
    assert publisher.tick(1000) == [] and len(publisher.log) == 1


def test_changes_of_a_tap_turn_before_the_first_tick_are_published() -> None:
    """At start the change tap's first turn may come before the publisher's first tick:
    its changes were recalled but never published (a feed consumer summing changes
    undercounted)."""
    values = {A: 3, B: 4}
    sink = Offered()
    publisher = Publisher(
        EventLog(1),
        4,
        lambda shard: shard == 0,
        values.get,
        [sink],
        version_of=lambda key, shard: values.get(key),
        min_interval_ms=100,
        recall_ms=10_000,
    )
    publisher.on_changes([Change(A, 0, 0, 3), Change(B, 1, 0, 4)], 1000)
    assert [(e.name, e.value, e.change) for e in sink.events] == [("a", 3, 3)]


def test_a_node_that_takes_a_shard_over_republishes_its_recent_counters() -> None:
    owned: set[int] = {0}
    values = {A: 3, B: 9}
    publisher, sink = publisher_of(owned, values)
    publisher.on_changes([Change(A, 0, 0, 3), Change(B, 1, 2, 9)], 1000)
    publisher.tick(1000)  # B's shard belongs to another node: not published here
    assert [e.name for e in sink.events] == ["a"]
    owned.add(1)  # its coordinator died: this node is next in the preference list
    events = publisher.tick(1100)
    # B's latest value, flagged: the dead coordinator may or may not have published it
    assert [(e.name, e.value, e.change, e.replayed) for e in events] == [("b", 9, 7, True)]
    assert publisher.takeovers == 1 and publisher.tick(1200) == []


def test_a_node_that_hands_a_shard_on_publishes_what_it_held_back_then_stops() -> None:
    owned = {0}
    publisher, _ = publisher_of(owned, {A: 1})
    publisher.on_changes([Change(A, 0, 0, 1)], 1000)
    publisher.tick(1000)
    publisher.on_changes([Change(A, 0, 1, 2)], 1050)  # waits for its interval
    owned.clear()  # a ring change: another node coordinates shard 0 now
    events = publisher.tick(1060)
    assert [(e.value, e.change, e.replayed) for e in events] == [(2, 1, False)]
    publisher.on_changes([Change(A, 0, 2, 5)], 1200)
    assert publisher.tick(1300) == []


def test_with_a_placement_a_tick_asks_the_shards_only_when_the_placement_changed() -> None:
    owned: set[int] = {0}
    asked: list[int] = []
    placement = ["ring 1"]

    def coordinates(shard: int) -> bool:
        asked.append(shard)
        return shard in owned

    values = {A: 3, B: 9}
    publisher = Publisher(
        EventLog(1),
        4,
        coordinates,
        values.get,
        [Offered()],
        version_of=lambda key, shard: values.get(key),
        min_interval_ms=100,
        recall_ms=10_000,
        placement=lambda: tuple(placement),  # a new tuple each call, equal until changed
    )
    publisher.tick(0)
    assert sorted(asked) == [0, 1, 2, 3]
    asked.clear()
    publisher.on_changes([Change(A, 0, 0, 3), Change(B, 1, 2, 9)], 1000)
    publisher.tick(1100)
    assert asked == []  # the same placement: the shards owned are the last tick's
    owned.add(1)
    placement[0] = "ring 2"  # B's coordinator died: this node coordinates shard 1 now
    events = publisher.tick(1200)
    assert sorted(asked) == [0, 1, 2, 3]
    assert [(e.name, e.value, e.replayed) for e in events] == [("b", 9, True)]


def test_recollections_expire_after_the_recall_window() -> None:
    owned: set[int] = set()
    publisher, _ = publisher_of(owned, {A: 1})
    publisher.on_changes([Change(A, 0, 0, 1)], 1000)
    publisher.tick(1000)
    publisher.tick(12_000)  # past recall_ms: A is forgotten
    owned.add(0)
    assert publisher.tick(12_100) == []


class FlakySink:
    name = "flaky"

    def __init__(self) -> None:
        self.down = False
        self.got: list[int] = []

    async def publish(self, events: Sequence[Event]) -> None:
        if self.down:
            raise SinkError("down")
        self.got += [e.value for e in events]

    async def close(self) -> None:
        pass


def events_of(*values: int) -> list[Event]:
    return [Event(v, "t", "ns", "x", v, 1, 1000, False, v) for v in values]


def test_a_pump_keeps_events_while_its_sink_is_down_and_bounds_them() -> None:
    sink = FlakySink()
    pump = SinkPump(sink, capacity=3, clock_ms=lambda: 3000)
    sink.down = True
    pump.offer(events_of(1, 2))
    asyncio.run(pump.drain())
    assert not pump.healthy and len(pump.backlog) == 2 and "down" in pump.degraded()
    assert pump.lag_ms() == 2000
    pump.offer(events_of(3, 4))  # past capacity: the oldest goes
    assert pump.dropped == 1 and [e.value for e in pump.backlog] == [2, 3, 4]
    sink.down = False
    asyncio.run(pump.drain())
    assert pump.healthy and sink.got == [2, 3, 4] and not pump.backlog and pump.published == 3


@pytest.mark.parametrize(
    "body",
    [None, [], ["t", "ns", "", 0], ["t", "ns", "", "0", 10], ["t", "", "", 0, 10],
     ["t", "ns", "", -2, 10], ["t", "ns", "", 0, 0], ["t", "ns", "", 0, 10**6],
     [1, "ns", "", 0, 10]],
)  # fmt: skip
def test_a_malformed_events_request_is_refused(body: object) -> None:
    with pytest.raises(ProtocolError):
        feed_wire.ask_from_wire(body)


def test_a_version_past_uint64_reads_the_same_here_and_at_a_peer() -> None:
    # a counter whose lifetime increments and decrements pass 2^64 (its slots rotate at
    # int64's edge): this node's own read and a peer's read over the wire must order its
    # events alike, or a stream merging both drops the newer state as stale
    log = EventLog(2)
    log.append([("t", "ns", "x", 5, 1, False, (1 << 64) + 5)], 1000)
    log.append([("t", "ns", "x", 6, 1, False, (1 << 64) + 9)], 1001)
    local = log.read(("t", "ns"), "", log.base, 10)
    wire = msgpack.unpackb(msgpack.packb(feed_wire.read_to_wire(local)))
    remote = feed_wire.read_from_wire(wire, "t", "ns")
    assert remote == local
    assert [e.version for e in local.events] == [MAX_VERSION, MAX_VERSION]


def test_an_events_reply_round_trips_and_a_bad_one_is_refused() -> None:
    log = EventLog(2)
    log.append([("t", "ns", "x", 5, -2, True, 9)], 1000)
    read = log.read(("t", "ns"), "", log.base, 10)
    assert feed_wire.read_from_wire(feed_wire.read_to_wire(read), "t", "ns") == read
    for bad in (
        [0, 0],
        [0, 0, [[1, "x", 1, 1, 1, False]]],  # no version
        [0, 0, [[1, "x", "1", 1, 1, False, 1]]],
        [0, 0, [[1, "x", 1, 1, 1, False, -1]]],
    ):
        with pytest.raises(ProtocolError):
            feed_wire.read_from_wire(bad, "t", "ns")

"""Window catch-up (node/realtime/buckets.py, Fanout.catch_up): a replica that began
observing late takes the buckets before its cut from one that observed earlier, so its
windows then equal the other's, with nothing counted twice (its own recovery merges before
the cut go) and nothing missed; malformed buckets are refused whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdt import PNCounter
from node.cluster.wire import ProtocolError
from node.realtime.buckets import SETTLE_MS, parse
from node.realtime.changes import Change
from node.realtime.fanout import Fanout
from node.realtime.query import query_from_wire
from node.realtime.service import Realtime
from node.realtime.windows import NamespaceWindow
from node.storage.store import CounterStore

SHARDS = 2
MINUTE = 60_000
NAMES = ("ab", "abc")  # one per shard


def shard_of(key: tuple[str, str, str]) -> int:
    return len(key[2]) % SHARDS


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def node(clock: Clock) -> tuple[CounterStore, Realtime]:
    store = CounterStore(shard_of, track_changes=True)
    return store, Realtime(store, SHARDS, lambda s: True, lambda: True, clock_ms=clock)


class Link:
    def __init__(self, other: Realtime) -> None:
        self.other = other

    async def call(self, kind: int, body: Any, timeout: float) -> Any:
        return self.other.answer(query_from_wire(body, SHARDS)).to_wire()


class Pool:
    def __init__(self, other: Realtime) -> None:
        self.other = other

    def link(self, address: str) -> Link:
        return Link(self.other)


class Cluster:
    node_id = "late"
    ready = True

    class config:  # stands in for Config
        request_timeout_s = 1.0

    def replicas(self, shard: int) -> tuple[str, ...]:
        return ("late", "early")

    def alive(self, node_id: str) -> bool:
        return True

    def address_of(self, node_id: str) -> str:
        return node_id


def feed(realtime: Realtime, minute: int, name: str, delta: int, ns: str = "ns") -> None:
    key = ("t", ns, name)
    realtime.on_changes([Change(key, shard_of(key), 0, delta)], minute * MINUTE + 5)


def changes(realtime: Realtime, ns: str = "ns") -> dict[int, dict[str, int]]:
    assert realtime.windows is not None
    out = {}
    for shard in range(SHARDS):
        window = realtime.windows.get(shard, "t", ns)
        if window is not None:
            out[shard] = window.changes(0, "")
    return out


def test_a_late_replica_takes_the_buckets_before_its_cut() -> None:
    early_clock, late_clock = Clock(100 * MINUTE), Clock(105 * MINUTE + 30_000)
    _, early = node(early_clock)
    early.observe(early_clock.ms)  # empty store: observed since ever
    late_store, late = node(late_clock)
    late_store.load_durable([(("t", "ns", "ab"), PNCounter.from_slot("a:1", 9, 0))])
    late_store.load_durable([(("t", "ns", "abc"), PNCounter.from_slot("a:1", 9, 0))])
    late.observe(late_clock.ms)
    assert late.since == {0: 106 * MINUTE, 1: 106 * MINUTE}
    for minute, name, delta in [(101, "ab", 3), (103, "abc", 4), (104, "ab", -1)]:
        feed(early, minute, name, delta)
        feed(early, minute, name, delta, ns="other")
    feed(late, 105, "ab", 500)  # a recovery merge in the minute under way: not a change
    for minute, name, delta in [(106, "ab", 2), (107, "abc", 6)]:
        feed(early, minute, name, delta)
        feed(late, minute, name, delta)
    late_clock.ms = 106 * MINUTE + SETTLE_MS - 1
    assert late.catch_up_due(late_clock.ms) == []
    late_clock.ms += 1
    assert sorted(late.catch_up_due(late_clock.ms)) == [0, 1]
    fanout = Fanout(Cluster(), Pool(early), late)  # type: ignore[arg-type]
    asyncio.run(fanout.catch_up())
    assert late.since == {0: 0, 1: 0} and late.caught_up == {0, 1}
    assert changes(late) == changes(early) == {0: {"ab": 4}, 1: {"abc": 10}}
    assert changes(late, "other") == changes(early, "other")
    assert late.catch_up_due(late_clock.ms) == []  # once per observation


def test_no_earlier_replica_leaves_the_late_one_as_it_was() -> None:
    clock = Clock(105 * MINUTE + 1)
    store, late = node(clock)
    store.load_durable([(("t", "ns", "ab"), PNCounter.from_slot("a:1", 9, 0))])
    late.observe(clock.ms)
    other_store, other = node(clock)
    other_store.load_durable([(("t", "ns", "ab"), PNCounter.from_slot("a:1", 9, 0))])
    other.observe(clock.ms + MINUTE)  # observed from later still
    clock.ms = 106 * MINUTE + SETTLE_MS
    asyncio.run(Fanout(Cluster(), Pool(other), late).catch_up())  # type: ignore[arg-type]
    assert late.since[0] == 106 * MINUTE and 0 in late.caught_up


class Pools:
    """Links to several replicas, by address (= node id here)."""

    def __init__(self, nodes: dict[str, Realtime]) -> None:
        self.nodes = nodes

    def link(self, address: str) -> Link:
        return Link(self.nodes[address])


class ThreeReplicas(Cluster):
    def replicas(self, shard: int) -> tuple[str, ...]:
        return ("late", "restarted", "early")


def test_a_late_replica_takes_the_buckets_of_the_one_that_observed_longest() -> None:
    """The first other replica began observing late too (it restarted): taking its buckets
    would leave this one late for good, so short of a full observer once a join moves the
    early one away. It takes the early one's."""
    clock = Clock(105 * MINUTE + 30_000)
    _, early = node(clock)
    early.observe(100 * MINUTE)  # empty store: observed since ever
    restarted_store, restarted = node(clock)
    late_store, late = node(clock)
    for store in (restarted_store, late_store):
        store.load_durable([(("t", "ns", n), PNCounter.from_slot("a:1", 9, 0)) for n in NAMES])
    restarted.observe(102 * MINUTE + 1)
    late.observe(clock.ms)
    for minute, name, delta in [(101, "ab", 3), (103, "abc", 4), (104, "ab", -1)]:
        feed(early, minute, name, delta)
        if minute >= 103:
            feed(restarted, minute, name, delta)
    clock.ms = 106 * MINUTE + SETTLE_MS
    pool = Pools({"restarted": restarted, "early": early})
    asyncio.run(Fanout(ThreeReplicas(), pool, late).catch_up())  # type: ignore[arg-type]
    assert late.since == {0: 0, 1: 0}
    assert changes(late) == changes(early) == {0: {"ab": 2}, 1: {"abc": 4}}


@pytest.mark.parametrize(
    "bad",
    [
        {},
        [["t", "ns"]],
        [["t", 1, []]],
        [["t", "ns", [[5, ["a", 1]], [5, ["b", 1]]]]],  # a minute twice
        [["t", "ns", [[10, ["a", 1]]]]],  # at the cut
        [["t", "ns", [[5, ["a"]]]]],
        [["t", "ns", [[5, ["a", "1"]]]]],
        [["t", "ns", [[5, [1, 1]]]]],
        [["t", "ns", [["5", ["a", 1]]]]],
    ],
)
def test_malformed_buckets_are_refused(bad: object) -> None:
    with pytest.raises(ProtocolError):
        parse(bad, 10)


def test_parsed_buckets_keep_one_string_per_name() -> None:
    """Each minute of the wire form decodes its own copy of a name: parsed, they share one,
    the one the windows key later changes of the name by."""
    wire = [["t", "ns", [[minute, ["".join(["v", ":1"]), 1]] for minute in (3, 4, 5)]]]
    minutes = parse(wire, 10)[("t", "ns")]
    kept = [next(iter(bucket)) for _, bucket in minutes]
    assert kept == ["v:1"] * 3 and kept[1] is kept[0] and kept[2] is kept[0]
    later = "".join(["v", ":1"])  # as a request decodes it
    window = NamespaceWindow()
    window.minutes, window.deltas = [3], [minutes[0][1]]
    window.add(6, later, 1)
    assert next(iter(window.deltas[-1])) is kept[0]

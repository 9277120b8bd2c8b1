"""A counter's events across a coordinator hand-over, in-process: two nodes' real stores,
change taps, publishers and logs, and one SSE stream's Follower reading both logs.

The hand-over the join test caught (tests/cluster/test_feed.py): the old coordinator has
published the counter at 68; the new one's replica lags at 63 (replication had not reached
it), and on taking the shard over it republishes what it holds. A stream must not go back
from 68 to 63; it goes on once the new coordinator has caught up. A decrement is not
"going back": the order is the CRDT state's (its version), not the value's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import pytest

from crdt import PNCounter
from node.base.keys import Key
from node.realtime.changes import ChangeTap
from node.realtime.feed_log import EventLog, Read, Subject
from node.realtime.publisher import Publisher
from node.realtime.stream import Follower, StreamTally
from node.storage.store import CounterStore

K: Key = ("t", "ns", "k")
T: Subject = ("t", "ns")


def shard_of(key: Key) -> int:
    return 0


class Node:
    """One node's feed parts over a real store: its tap feeds its publisher, which files
    events into its log while it coordinates shard 0."""

    def __init__(self, incarnation: int, coordinates: bool, clock: list[int]) -> None:
        self.store = CounterStore(shard_of, track_changes=True)
        self.log = EventLog(incarnation)
        self.coordinates = coordinates
        self.publisher = Publisher(
            self.log,
            1,
            lambda shard: self.coordinates,
            self.store.value,
            [],
            min_interval_ms=1,
            recall_ms=10_000,
            version_of=self.store.version,
        )
        self.tap = ChangeTap(self.store, shard_of, [self.publisher], clock_ms=lambda: clock[0])
        self.clock = clock
        self.publisher.tick(clock[0])

    def turn(self) -> None:
        """A change tap turn, then the publisher's own tick (a ring change shows here)."""
        self.clock[0] += 10
        asyncio.run(self.tap.turn())
        self.publisher.tick(self.clock[0])


class Logs:
    """The FeedReader's read over the nodes' logs."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = nodes

    def members(self) -> dict[str, str]:
        return {node: node for node in self.nodes}

    async def read(
        self, subject: Subject, prefix: str, position: Mapping[str, int]
    ) -> dict[str, Read]:
        return {
            name: node.log.read(subject, prefix, position.get(name, 0), 1000)
            for name, node in self.nodes.items()
        }


def sent(follower: Follower) -> list[dict[str, object]]:
    out = []
    for frame in asyncio.run(follower.next_frames()):
        fields = dict(line.split(": ", 1) for line in frame.strip().split("\n"))
        out.append(json.loads(fields["data"]))
    return out


def replicate(source: Node, target: Node, actor: str) -> None:
    """What a replication frame does: the target merges the source's slot of an actor."""
    state = source.store.get(K)
    assert state is not None
    target.store.merge(K, PNCounter.from_slot(actor, state.p.get(actor), state.n.get(actor)))


def follow(nodes: Mapping[str, Node]) -> Follower:
    return Follower(Logs(nodes), T, "", {}, StreamTally(10))  # type: ignore[arg-type]


@pytest.mark.parametrize("old_dies", [False, True], ids=["join", "kill"])
def test_a_lagging_new_coordinator_does_not_take_a_counter_back(old_dies: bool) -> None:
    clock = [1000]
    old, new = Node(1, True, clock), Node(2, False, clock)
    nodes = {"n2": old, "n1": new}
    follower = follow(nodes)
    seen: list[dict[str, object]] = []
    for delta in (60, 3, 5):  # writes through the old coordinator, replicated to the new
        old.store.increment_slot(K, "n2:1", delta)
        old.turn()
        if delta != 5:  # ... all but the last: the new one lags at 63
            replicate(old, new, "n2:1")
        new.turn()
        seen += sent(follower)
    assert [e["value"] for e in seen] == [60, 63, 68]

    # a join moves the shard's coordinator; a kill -9 too, once the others notice
    old.coordinates, new.coordinates = False, True
    if old_dies:
        del nodes["n2"]  # its log is no longer read: readers ask live members only
    else:
        old.turn()
    new.turn()  # takes the shard over: republishes the 63 it holds
    seen += sent(follower)
    assert follower.tally.stale == 1  # the 63, an older state than the 68 sent
    replicate(old, new, "n2:1")  # catches up (replication, anti-entropy) ...
    new.turn()
    new.store.increment_slot(K, "n1:2", 1)  # ... and takes a write of its own
    new.turn()
    seen += sent(follower)
    assert [(e["value"], e["change"]) for e in seen] == [
        (60, 60),
        (63, 3),
        (68, 5),
        (68, 0),
        (69, 1),
    ]
    assert [e["version"] for e in seen] == [60, 63, 68, 68, 69]


def test_a_decrement_is_a_newer_state_not_a_step_back() -> None:
    clock = [1000]
    old, new = Node(1, True, clock), Node(2, False, clock)
    follower = follow({"n2": old, "n1": new})
    old.store.increment_slot(K, "n2:1", 8)
    old.turn()
    replicate(old, new, "n2:1")
    old.store.increment_slot(K, "n2:1", 2)  # the new coordinator lags at 8
    old.turn()
    seen = sent(follower)
    old.coordinates, new.coordinates = False, True
    old.turn()
    new.turn()  # republishes its 8: older, not sent
    replicate(old, new, "n2:1")
    new.turn()
    new.store.increment_slot(K, "n1:2", -4)  # a decrement: the value goes down, legitimately
    new.turn()
    seen += sent(follower)
    assert [(e["value"], e["change"], e["version"]) for e in seen] == [
        (8, 8, 8),
        (10, 2, 10),
        (10, 0, 10),  # the new coordinator caught up: the same state, a repeat
        (6, -4, 14),
    ]

"""The change feed's publisher: each change published once, by its shard's coordinator.

Every replica of a shard sees every change of it (node/realtime/changes.py), so every one
could publish; only the shard's coordinator does (`cluster.coordinator(shard)`, the rule the
history recorder follows), so each change becomes one event in one node's log, not N. At
each change tap turn, and every 0.1 s besides (`tick`), the publisher emits the counters the
coalescer says are due into this node's log (feed_log.py) and offers them to the sinks
(sinks.py). From an acknowledged write to an SSE client: at most a tap turn (0.1 s), a
stream's read (0.2 s) and the coalescing interval of a counter that changed just before.

When the coordinator changes with a ring change (a join, a leave), the old one publishes at
once what it held back for coalescing, and the new one publishes what follows. What a client
sees across a coordinator failover. Events the old coordinator had published
stay readable while it lives; what it had not yet published (at most one interval of
coalescing) dies with it. So every node remembers, per shard it replicates, the counters
changed within `recall_ms` (a few failure timeouts: the time a node needs to notice a death),
and a node that becomes a shard's coordinator republishes each of them with its value now,
marked `replayed`. So the last event of every counter carries its latest value: delivery is
at least once, never less; a replayed event may repeat a change the old coordinator already
published, so a consumer that sums `change` should treat replayed events as corrections (take
`value`).

Order per counter. Every event carries the version of the counter's state its value was
read from (the sum of its slots, crdt/packed.py; read in the same step as the value, so the
two always match): it grows with every change of the state, a decrement's included, and a
later state of a counter, on any replica, has a larger one. Within one node's log a
counter's versions only grow. Across a hand-over they need not: the new coordinator's
replica may lag the old one's, so what it republishes can be older than what the old one
published (the join test saw a counter's stream go 60, 68, 63, 69), and while two nodes'
views of the ring differ both may publish. So the order is kept where events from several
logs meet: an SSE stream never sends an event older than one it sent of that counter
(stream.py), and a consumer of a sink orders by `version` (sink_redis.py). Neither waits
for the new coordinator: its replica catches up by replication and anti-entropy, and each
change that brings is published with a newer version.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from node.base.keys import Key
from node.realtime.changes import Change
from node.realtime.coalesce import Coalescer
from node.realtime.feed_log import Event, EventLog, Item

# Changes remembered for a takeover, at most (whole turns go first): the tap's own tuples,
# kept by reference, about 80 B each, so 40 MB at most; below ~40,000 changes/s the recall
# window (12 s by default) is reached first.
MAX_RECALLED = 500_000


class EventConsumer(Protocol):
    def offer(self, events: Sequence[Event]) -> None:
        """Take published events; never blocks, never raises."""


class Publisher:
    """Subscribes to the change tap; publishes the changes of the shards it coordinates.

    Cost on the change path: a set lookup per change, and for the third or so of changes
    whose shard this node coordinates, a coalescing entry and a log record per event. The
    turns' change lists are kept (not copied) for the recall window, so a takeover, which is
    rare, scans them instead of every change paying for an index."""

    def __init__(
        self,
        log: EventLog,
        shards: int,
        coordinates: Callable[[int], bool],
        value_of: Callable[[Key], int | None],
        sinks: Sequence[EventConsumer],
        *,
        version_of: Callable[[Key, int], int | None],  # (key, its shard)
        min_interval_ms: int,
        recall_ms: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        placement: Callable[[], object] | None = None,
    ) -> None:
        self.log = log
        self.shards = shards
        self.coordinates = coordinates
        # What `coordinates` answers from (Cluster.placement), asked each tick: while it
        # compares equal, the shards owned are those of the last tick, and a tick does not
        # ask every shard again (256 calls, once per change tap turn under load). None: ask.
        self.placement = placement
        self._placed: object = None
        self.value_of = value_of
        self.version_of = version_of
        self.sinks = list(sinks)
        self.coalescer = Coalescer(min_interval_ms)
        self.recall_ms = recall_ms
        self.clock_ms = clock_ms
        self._owned: frozenset[int] | None = None  # shards coordinated at the last tick
        self._recalled: deque[tuple[int, Sequence[Change]]] = deque()  # (at_ms, a turn's)
        self._recalled_count = 0
        self.published = 0
        self.replayed = 0
        self.takeovers = 0

    def on_changes(self, changes: Sequence[Change], at_ms: int) -> None:
        """A change tap turn's changes. The tap calls this in the same step as it read the
        values (no await between), so each version read here is the state of `after`."""
        if self._owned is None:  # a tap turn before the first tick: learn the shards first
            self.tick(at_ms)
        owned, add, version_of = self._owned, self.coalescer.add, self.version_of
        if owned:
            for key, shard, before, after in changes:
                if shard in owned and after != before:  # not a counter new here at 0
                    add(key, shard, before, after, version_of(key, shard) or 0)
        self._recalled.append((at_ms, changes))
        self._recalled_count += len(changes)
        while self._recalled_count > MAX_RECALLED and len(self._recalled) > 1:
            self._recalled_count -= len(self._recalled.popleft()[1])
        # Publish at once rather than up to a turn later; the supervised `turn` is for
        # counters whose interval ends while nothing changes.
        self.tick(at_ms)

    async def turn(self) -> None:
        """For the supervisor: one tick at the clock's time."""
        self.tick(self.clock_ms())

    def tick(self, now_ms: int) -> list[Event]:
        """Publish what is due and what a change of coordinator needs; trim the log.
        Returns the events published."""
        items: list[Item] = []
        self._coordinators_changed(now_ms, items)
        for key, value, change, version in self.coalescer.due(now_ms):
            items.append((key[0], key[1], key[2], value, change, False, version))
        events = self.log.append(items, now_ms, events=bool(self.sinks))
        self.published += len(items)
        if events:
            for sink in self.sinks:
                sink.offer(events)
        return events

    def _coordinators_changed(self, now_ms: int, items: list[Item]) -> None:
        """Republish the recalled counters of each shard this node has just become the
        coordinator of; publish at once what waits of each shard it handed on."""
        oldest = now_ms - self.recall_ms
        while self._recalled and self._recalled[0][0] < oldest:
            self._recalled_count -= len(self._recalled.popleft()[1])
        if self.placement is not None:
            placed = self.placement()
            if self._owned is not None and placed == self._placed:
                return
            self._placed = placed
        owned = frozenset(s for s in range(self.shards) if self.coordinates(s))
        before, self._owned = self._owned, owned
        if before is None or owned == before:
            return
        lost = before - owned
        if lost:
            # Handed on (a ring change, or this node fell behind): what waits here changed
            # while this node published the shard, so it goes out now; later changes are
            # the new coordinator's to publish.
            for key, value, change, version in self.coalescer.take(set(lost)):
                items.append((key[0], key[1], key[2], value, change, False, version))
        gained = owned - before
        if gained:
            self._republish(gained, items)

    def _republish(self, gained: frozenset[int], items: list[Item]) -> None:
        first_before: dict[Key, tuple[int, int]] = {}  # key -> (its first before, shard)
        for _, changes in self._recalled:
            for key, shard, before, _after in changes:
                if shard in gained and key not in first_before:
                    first_before[key] = (before, shard)
        if not first_before:
            return
        self.takeovers += 1
        value_of, version_of = self.value_of, self.version_of
        for key, (first, shard) in first_before.items():
            value = value_of(key)
            if value is not None:
                version = version_of(key, shard) or 0
                items.append((key[0], key[1], key[2], value, value - first, True, version))
                self.replayed += 1
        self.coalescer.forget(set(first_before))  # their value is in the replayed event

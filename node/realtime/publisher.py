"""The change feed's publisher: each change published once, by its shard's coordinator.

Every replica of a shard sees every change of it (node/realtime/changes.py), so every one
could publish; only the shard's coordinator does (`cluster.coordinator(shard)`, the rule the
history recorder follows), so each change becomes one event in one node's log, not N. Each
turn (`tick`, every 0.1 s) the publisher emits the counters the coalescer says are due into
this node's log (feed_log.py) and offers them to the sinks (sinks.py).

What a client sees across a coordinator failover. Events the old coordinator had published
stay readable while it lives; what it had not yet published (at most one interval of
coalescing) dies with it. So every node remembers, per shard it replicates, the counters
changed within `recall_ms` (a few failure timeouts: the time a node needs to notice a death),
and a node that becomes a shard's coordinator republishes each of them with its value now,
marked `replayed`. So the last event of every counter carries its latest value: delivery is
at least once, never less; a replayed event may repeat a change the old coordinator already
published, so a consumer that sums `change` should treat replayed events as corrections (take
`value`). Within one node's log, a counter's events are in order; a feed reader merges the
logs by time, so a counter's events stay in order unless two nodes' clocks disagree by more
than the time between two of its events.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from node.base.keys import Key
from node.realtime.changes import Change
from node.realtime.coalesce import Coalescer
from node.realtime.feed_log import Event, EventLog

MAX_RECALLED = 200_000  # counters remembered for a takeover, over all shards


class EventConsumer(Protocol):
    def offer(self, events: Sequence[Event]) -> None:
        """Take published events; never blocks, never raises."""


class Publisher:
    """Subscribes to the change tap; publishes the changes of the shards it coordinates."""

    def __init__(
        self,
        log: EventLog,
        coordinates: Callable[[int], bool],
        value_of: Callable[[Key], int | None],
        sinks: Sequence[EventConsumer],
        *,
        min_interval_ms: int,
        recall_ms: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.clock_ms = clock_ms
        self.log = log
        self.coordinates = coordinates
        self.value_of = value_of
        self.sinks = list(sinks)
        self.coalescer = Coalescer(min_interval_ms)
        self.recall_ms = recall_ms
        # shard -> counter -> (value before its first recalled change, at_ms of its last)
        self._recalled: dict[int, OrderedDict[Key, tuple[int, int]]] = {}
        self._recalled_count = 0
        self._coordinated: dict[int, bool] = {}  # per recalled shard, at the last tick
        self.published = 0
        self.replayed = 0
        self.takeovers = 0

    def on_changes(self, changes: Sequence[Change], at_ms: int) -> None:
        coordinated: dict[int, bool] = {}
        for key, shard, before, after in changes:
            recalled = self._recalled.get(shard)
            if recalled is None:
                recalled = self._recalled[shard] = OrderedDict()
            first = recalled.pop(key, None)
            if first is None:
                self._recalled_count += 1
            recalled[key] = (before if first is None else first[0], at_ms)
            mine = coordinated.get(shard)
            if mine is None:
                mine = coordinated[shard] = self.coordinates(shard)
            if mine:
                self.coalescer.add(key, before, after)
        self._forget_oldest()

    async def turn(self) -> None:
        """For the supervisor: one tick at the clock's time."""
        self.tick(self.clock_ms())

    def tick(self, now_ms: int) -> list[Event]:
        """Publish what is due and what a takeover needs; trim the log. Returns the events."""
        items: list[tuple[str, str, str, int, int, bool]] = []
        self._takeovers(now_ms, items)
        for key, value, change in self.coalescer.due(now_ms):
            items.append((key[0], key[1], key[2], value, change, False))
        events = self.log.append(items, now_ms) if items else []
        if not items:
            self.log.trim(now_ms)
        if events:
            self.published += len(events)
            for sink in self.sinks:
                sink.offer(events)
        return events

    def _takeovers(self, now_ms: int, items: list[tuple[str, str, str, int, int, bool]]) -> None:
        """Expire old recollections; republish the recalled counters of each shard this node
        has just become the coordinator of."""
        oldest = now_ms - self.recall_ms
        for shard in list(self._recalled):
            recalled = self._recalled[shard]
            while recalled and next(iter(recalled.values()))[1] < oldest:
                recalled.popitem(last=False)
                self._recalled_count -= 1
            if not recalled:
                del self._recalled[shard]
                self._coordinated.pop(shard, None)
                continue
            mine = self.coordinates(shard)
            if mine and self._coordinated.get(shard) is False:
                self._republish(recalled, items)
            elif not mine and self._coordinated.get(shard):
                self.coalescer.forget(set(recalled))  # the new coordinator publishes them
            self._coordinated[shard] = mine

    def _republish(
        self,
        recalled: OrderedDict[Key, tuple[int, int]],
        items: list[tuple[str, str, str, int, int, bool]],
    ) -> None:
        self.takeovers += 1
        for key, (first_before, _) in recalled.items():
            value = self.value_of(key)
            if value is None:
                continue
            items.append((key[0], key[1], key[2], value, value - first_before, True))
            self.replayed += 1
        self.coalescer.forget(set(recalled))  # their value is in the replayed event

    def _forget_oldest(self) -> None:
        while self._recalled_count > MAX_RECALLED:
            shard = min(self._recalled, key=lambda s: next(iter(self._recalled[s].values()))[1])
            recalled = self._recalled[shard]
            recalled.popitem(last=False)
            self._recalled_count -= 1
            if not recalled:
                del self._recalled[shard]

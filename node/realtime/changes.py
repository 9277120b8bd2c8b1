"""The change tap: the store's changed counters, drained every turn and handed on.

The store marks a counter the first time its value may change after a take, with its value
before (CounterStore(track_changes=True), `take_changes`): one dict lookup per change, no
object. A turn takes the marks, reads each counter's value now, keeps those whose value
moved, and hands them to every subscriber as one list of `Change` tuples with the turn's
time. So repeated changes of a counter within a turn arrive as one, its net change, and a
subscriber sees a counter's changes in the order they happened, each exactly once per node.

What counts as a change is what this node observes: its own increments, slots merged from a
replication frame, a read repair, anti-entropy or a reset. A counter loaded at start or
arriving with a hand-off is not a change (its history happened elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from node.base.keys import Key
from node.storage.store import CounterStore


class Change(NamedTuple):
    key: Key
    shard: int
    before: int  # the value before the turn's first change (0 for a counter new here)
    after: int  # the value at the end of the turn


class ChangeSubscriber(Protocol):
    def on_changes(self, changes: Sequence[Change], at_ms: int) -> None:
        """The changes of one turn, which ended at `at_ms` (unix ms). Runs on the event
        loop: keep it to array work, and queue anything slow."""


class ChangeTap:
    """Drains the store's change marks into the subscribers, one turn at a time."""

    def __init__(
        self,
        store: CounterStore,
        shard_of: Callable[[Key], int],
        subscribers: Sequence[ChangeSubscriber],
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        before_take: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.store = store
        self.shard_of = shard_of
        self.subscribers = list(subscribers)
        # run at each turn just before the take, even when nothing changed: what must know
        # which changes a take holds relative to a moment (Realtime.watch: recovery)
        self.before_take = list(before_take)
        self.clock_ms = clock_ms
        self.turns = 0
        self.changes = 0  # changes handed on since start

    def take(self) -> list[Change]:
        """One turn's changes, without handing them on."""
        value, shard_of = self.store.value, self.shard_of
        out = []
        for key, before in self.store.take_changes().items():
            after = value(key)
            if after is not None and after != before:
                out.append(Change(key, shard_of(key), before, after))
        return out

    async def turn(self) -> None:
        for call in self.before_take:
            call()
        changes = self.take()
        self.turns += 1
        if not changes:
            return
        self.changes += len(changes)
        at_ms = self.clock_ms()
        for subscriber in self.subscribers:
            subscriber.on_changes(changes, at_ms)

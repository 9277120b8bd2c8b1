"""The change tap: the store's changed counters, drained every turn and handed on.

The store marks a counter the first time its value may change after a take, with its value
before (CounterStore(track_changes=True), `take_changes`): two dict lookups per change, no
object. A turn takes the marks, reads each counter's value now, keeps those whose value
moved, and hands them to every subscriber as one list of `Change` tuples with the turn's
time. The marks are kept by shard and read back in the store (store_dirty.py), so a turn
costs a record read and a value per changed counter, with no key hashed again (every
replica's tap sees every change of its shards; under batches its reading was 6% of a
node's CPU). Repeated changes of a counter within a turn arrive as one, its net change,
and a subscriber sees a counter's changes in the order they happened, each exactly once
per node.

What counts as a change is what this node observes: its own increments, slots merged from a
replication frame, a read repair, anti-entropy or a reset. A counter loaded at start or
arriving with a hand-off is not a change (its history happened elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from node.base.keys import Key
from node.storage.store import CounterStore
from node.storage.store_dirty import Change

__all__ = ["Change", "ChangeSubscriber", "ChangeTap"]


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
        # the rule the store was made with; the store's marks carry each change's shard
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
        return self.store.take_changes()

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

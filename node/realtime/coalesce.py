"""Coalescing per counter: at most one event per counter per `min_interval_ms`. Pure.

A counter's changes wait as (value at its previous event, value now, its state's version
now: crdt/packed.py); once `min_interval_ms` has passed since its previous event, the next
turn emits one event whose change is the net change since then. A counter whose value came
back where it was emits nothing. Memory: one entry per counter that changed within the last
interval, and one per counter waiting.
"""

from __future__ import annotations

from collections import deque

from node.base.keys import Key

Due = tuple[Key, int, int, int]  # key, value, change since its previous event, version


class Coalescer:
    def __init__(self, min_interval_ms: int) -> None:
        self.min_interval_ms = min_interval_ms
        # key -> [value at its previous event, value now, shard, version now]
        self._waiting: dict[Key, list[int]] = {}
        self._emitted: dict[Key, int] = {}  # key -> at_ms of its last event, within the interval
        self._turns: deque[tuple[int, list[Key]]] = deque()  # (at_ms, keys emitted), in order

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: Key, shard: int, before: int, after: int, version: int) -> None:
        """A change of key's value to `after`, whose state's version is then `version`."""
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = [before, after, shard, version]
        else:
            waiting[1] = after
            waiting[3] = version

    def due(self, now_ms: int) -> list[Due]:
        """The counters whose interval has passed, each with its net change; starts their
        next interval."""
        emitted, turns = self._emitted, self._turns
        ended = now_ms - self.min_interval_ms
        while turns and turns[0][0] <= ended:
            at_ms, keys = turns.popleft()
            for key in keys:
                if emitted.get(key) == at_ms:
                    del emitted[key]
        out: list[Due] = []
        keys_now: list[Key] = []
        held: dict[Key, list[int]] = {}
        for key, waiting in self._waiting.items():
            if key in emitted:
                held[key] = waiting
            elif waiting[1] != waiting[0]:
                out.append((key, waiting[1], waiting[1] - waiting[0], waiting[3]))
                emitted[key] = now_ms
                keys_now.append(key)
        self._waiting = held
        if keys_now:
            turns.append((now_ms, keys_now))
        return out

    def take(self, shards: set[int]) -> list[Due]:
        """The waiting changes of these shards' counters now, whatever their interval."""
        out: list[Due] = []
        for key, waiting in list(self._waiting.items()):
            if waiting[2] in shards:
                del self._waiting[key]
                if waiting[1] != waiting[0]:
                    out.append((key, waiting[1], waiting[1] - waiting[0], waiting[3]))
        return out

    def forget(self, keys: set[Key]) -> None:
        """Drop waiting changes of counters whose value goes out another way."""
        for key in keys:
            self._waiting.pop(key, None)

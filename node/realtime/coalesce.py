"""Coalescing per counter: at most one event per counter per `min_interval_ms`. Pure.

A counter's changes wait as (value at its previous event, value now); once `min_interval_ms`
has passed since its previous event, the next turn emits one event whose change is the net
change since then. A counter whose value came back where it was emits nothing. Memory: one
entry per counter that changed within the last interval, and one per counter waiting.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from node.base.keys import Key


class Due(NamedTuple):
    key: Key
    value: int
    change: int


class Coalescer:
    def __init__(self, min_interval_ms: int) -> None:
        self.min_interval_ms = min_interval_ms
        self._waiting: dict[Key, list[int]] = {}  # key -> [value at previous event, value now]
        self._emitted: OrderedDict[Key, int] = OrderedDict()  # key -> at_ms, oldest first

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: Key, before: int, after: int) -> None:
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = [before, after]
        else:
            waiting[1] = after

    def due(self, now_ms: int) -> list[Due]:
        """The counters whose interval has passed, each with its net change; starts their
        next interval."""
        emitted, interval = self._emitted, self.min_interval_ms
        while emitted:
            key, at_ms = next(iter(emitted.items()))
            if now_ms - at_ms < interval:
                break
            del emitted[key]
        out: list[Due] = []
        waiting = self._waiting
        for key in [k for k in waiting if k not in emitted]:
            before, after = waiting.pop(key)
            if after != before:
                out.append(Due(key, after, after - before))
                emitted[key] = now_ms
        return out

    def forget(self, keys: set[Key]) -> None:
        """Drop waiting changes of counters this node no longer publishes."""
        for key in keys:
            self._waiting.pop(key, None)

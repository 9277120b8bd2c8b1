"""The node of the window file tests (test_window_persist.py, test_window_file.py): one life
of a node over a real store, change tap, Realtime and the SQLite window file of a data dir,
with the keys and shards those tests use."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt import PNCounter
from node.base.keys import Key
from node.realtime.changes import ChangeTap
from node.realtime.journal import Journal
from node.realtime.query import Answer, Kind, Query
from node.realtime.service import Realtime
from node.realtime.window_persist import WindowPersister, open_window_file
from node.realtime.windows import MINUTE_MS
from node.storage.store import CounterStore

SHARDS = 2
T0 = 1_000 * MINUTE_MS


def shard_of(key: Key) -> int:
    return int(key[2].rsplit(":", 1)[-1]) % SHARDS


def key(i: int) -> Key:
    return ("t", "ns", f"v:{i}")


class Node:
    """One life of a node: a store, its tap, Realtime and the window file of `data_dir`."""

    def __init__(self, data_dir: Path, now_ms: int) -> None:
        self.ms = now_ms
        self.recovered = False
        self.unpulled: set[int] = set()  # shards with a replica not pulled at recovery
        self.store = CounterStore(shard_of, track_changes=True)
        journal = Journal()
        self.realtime = Realtime(
            self.store,
            SHARDS,
            lambda s: True,
            lambda: self.recovered,
            clock_ms=self.clock,
            journal=journal,
        )
        self.tap = ChangeTap(
            self.store, shard_of, [self.realtime], self.clock, [self.realtime.watch]
        )
        file, stored = asyncio.run(open_window_file(data_dir, now_ms))
        self.persister = WindowPersister(
            self.realtime, journal, file, stored, self.clock, lambda s: s in self.unpulled
        )

    def clock(self) -> int:
        return self.ms

    def recover(self) -> None:
        self.recovered = True
        asyncio.run(self.tap.turn())
        asyncio.run(self.persister.turn())  # restores what waits, writes
        self.realtime.observe(self.ms)

    def add(self, i: int, delta: int, actor: str = "a:1") -> None:
        self.store.increment_slot(key(i), actor, delta)
        asyncio.run(self.tap.turn())

    def ask(self, span_min: int, strict: bool = False, name: str = "") -> Answer:
        kind = Kind.WINDOW if name else Kind.AGGREGATE
        query = Query(
            kind, "t", "ns", name=name, span_min=span_min, at_ms=self.ms,
            shards=tuple(range(SHARDS)), strict=strict,
        )  # fmt: skip
        return self.realtime.answer(query)

    def minutes(self) -> dict[int, dict[str, int]]:
        """minute -> name -> change, over every shard."""
        out: dict[int, dict[str, int]] = {}
        assert self.realtime.windows is not None
        for shard in range(SHARDS):
            window = self.realtime.windows.get(shard, "t", "ns")
            for minute, bucket in zip(window.minutes, window.deltas, strict=True) if window else ():
                out.setdefault(minute, {}).update(bucket)
        return out

    def stop(self) -> None:
        asyncio.run(self.persister.close())


def values(node: Node) -> list[tuple[Key, PNCounter]]:
    return [(k, PNCounter.from_slot("a:1", v, 0)) for k, v in node.store.shard_values(0)] + [
        (k, PNCounter.from_slot("a:1", v, 0)) for k, v in node.store.shard_values(1)
    ]

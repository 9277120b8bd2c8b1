"""What the windows took since the window file's last write (window_file.py), kept by the
change subscriber (service.py) as array work: per change one add to the minute's deltas and
one store of the change itself (its shard and value after); no object per change.

A write takes it whole on the event loop (`take`): every change handed on before the take is
in the batch, none after, so the batch's buckets and the values it records for each counter
agree as of the take's time (`through_ms`). A failed write gives it back (`give_back`),
merged under what came since, so no change is lost or counted twice on disk.
"""

from __future__ import annotations

from collections.abc import Callable

from node.base.keys import Key
from node.realtime.window_file import Batch, Row
from node.storage.store_dirty import Change


class Journal:
    def __init__(self) -> None:
        self.deltas: dict[int, dict[Key, int]] = {}  # minute -> counter -> net change
        self.afters: dict[Key, Change] = {}  # counter -> the last change handed on
        self.dropped: set[int] = set()  # shards whose windows went: their rows go
        self.rewritten: set[int] = set()  # shards whose buckets were replaced (catch-up)
        # Shards whose file rows await a restore (window_persist.py): their changes until
        # then are the restore's tail, so neither the windows nor the journal take them.
        self.restoring: set[int] = set()

    def minute(self, minute: int) -> dict[Key, int]:
        deltas = self.deltas.get(minute)
        if deltas is None:
            deltas = self.deltas[minute] = {}
        return deltas

    def drop(self, shard: int) -> None:
        self.dropped.add(shard)
        self.rewritten.discard(shard)

    def take(self, rows_of: Callable[[int], list[Row]]) -> Batch:
        """The batch to write; `rows_of(shard)` gives a rewritten shard's buckets now."""
        deltas, afters, self.deltas, self.afters = self.deltas, self.afters, {}, {}
        dropped, self.dropped = self.dropped, set()
        rewritten, self.rewritten = self.rewritten - dropped, set()
        skip = dropped | rewritten  # their rows go whole, or are written whole
        if skip:  # a counter with a delta has its last change here too
            deltas = {
                minute: {key: d for key, d in changed.items() if afters[key][1] not in skip}
                for minute, changed in deltas.items()
            }
            afters = {key: change for key, change in afters.items() if change[1] not in dropped}
        return Batch(deltas, afters, {}, dropped, {s: rows_of(s) for s in rewritten})

    def give_back(self, batch: Batch) -> None:
        """A failed write's batch, under what was journaled since."""
        for minute, changed in batch.deltas.items():
            mine = self.minute(minute)
            for key, delta in changed.items():
                mine[key] = mine.get(key, 0) + delta
        for key, change in batch.afters.items():
            self.afters.setdefault(key, change)
        self.dropped |= batch.dropped
        self.rewritten |= set(batch.rewritten) - self.dropped

"""What the windows took since the window file's last write (window_file.py), kept by the
change subscriber (service.py) as array work: per change, the change itself (its shard and
value after) and the (shard, tenant, namespace) whose buckets it touched, with the earliest
minute touched; no object per change beyond that key.

A write takes it whole on the event loop (`take`): every change handed on before the take is
in the batch, none after; the touched buckets go whole, copied from the windows then, so
the batch's buckets and the values it records for each counter agree as of the take's time
(`through_ms`). A failed write gives it back (`give_back`): its values under what came
since, its buckets taken again from the windows at the next take, so nothing is lost or
counted twice on disk.
"""

from __future__ import annotations

from node.base.keys import Key
from node.realtime.window_file import Batch, BucketKey
from node.realtime.windows import Windows
from node.storage.store_dirty import Change

SpaceKey = tuple[int, str, str]  # shard, tenant, namespace


class Journal:
    def __init__(self) -> None:
        self.afters: dict[Key, Change] = {}  # counter -> the last change handed on
        self.touched: dict[SpaceKey, int] = {}  # -> the earliest minute changed since
        self.dropped: set[int] = set()  # shards whose windows went: their rows go
        self.rewritten: set[int] = set()  # shards whose buckets were replaced (catch-up)
        # Shards whose file rows await a restore (window_persist.py): their changes until
        # then are the restore's tail, so neither the windows nor the journal take them.
        self.restoring: set[int] = set()

    def touch(self, space: SpaceKey, minute: int) -> None:
        earliest = self.touched.get(space)
        if earliest is None or minute < earliest:
            self.touched[space] = minute

    def drop(self, shard: int) -> None:
        self.dropped.add(shard)
        self.rewritten.discard(shard)

    def take(self, windows: Windows) -> Batch:
        """The batch to write, its buckets copied from `windows` now."""
        afters, self.afters = self.afters, {}
        touched, self.touched = self.touched, {}
        dropped, self.dropped = self.dropped, set()
        rewritten, self.rewritten = self.rewritten - dropped, set()
        if dropped:
            afters = {key: change for key, change in afters.items() if change[1] not in dropped}
        buckets: dict[BucketKey, dict[str, int]] = {}
        for shard in rewritten:
            for (tenant, namespace), window in windows.spaces(shard):
                for minute, bucket in zip(window.minutes, window.deltas, strict=True):
                    buckets[(shard, tenant, namespace, minute)] = bucket.copy()
        for (shard, tenant, namespace), earliest in touched.items():
            if shard in dropped or shard in rewritten:
                continue
            found = windows.get(shard, tenant, namespace)
            if found is None:
                continue
            minutes, deltas = found.minutes, found.deltas
            index = len(minutes)
            while index and minutes[index - 1] >= earliest:
                index -= 1
            for minute, bucket in zip(minutes[index:], deltas[index:], strict=True):
                buckets[(shard, tenant, namespace, minute)] = bucket.copy()
        return Batch(buckets, afters, {}, dropped, rewritten)

    def give_back(self, batch: Batch) -> None:
        """A failed write's batch, under what was journaled since."""
        for key, change in batch.afters.items():
            self.afters.setdefault(key, change)
        for shard, tenant, namespace, minute in batch.buckets:
            if shard not in batch.rewritten:
                self.touch((shard, tenant, namespace), minute)
        self.dropped |= batch.dropped
        self.rewritten |= batch.rewritten - self.dropped

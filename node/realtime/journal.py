"""What the windows took since the window file's last write (window_file.py), kept by the
change subscriber (service.py) as array work: per change, the change itself (its shard and
value after), and the (shard, tenant, namespace) whose buckets it touched, with the
earliest minute touched and the names whose entries changed; no object per change beyond
that key.

A write takes it whole on the event loop (`take`): every change handed on before the take is
in the batch, none after. Of the touched buckets, the batch holds the entries of the names
changed since the last take, each read from the windows then: the entry's whole value in
its minute, not an increment, so the file's rows of a bucket read back in write order give
the bucket (window_file.py), and the batch's entries and the values it records for each
counter agree as of the take's time (`through_ms`). A take costs O(counters changed since
the last one), whatever the buckets hold; copying the touched buckets whole cost O(counters
changed this minute) at every write: with a million counters changed within the minute and
15,000 changes a second, 59 ms of the event loop and 468 ms of the writer thread's CPU per
write, against 15 and 59 now (loadtest/bench_window_file.py). A bucket of which half the
entries or more changed goes whole (a copy in C, one row), and so do the buckets of a shard
whose buckets were replaced (`rewritten`: a catch-up). A failed write gives the batch back
(`give_back`): its values under what came since, its entries read again from the windows
at the next take, so nothing is lost or counted twice on disk.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.base.keys import Key
from node.realtime.window_file import Batch, BucketKey, SpaceKey
from node.realtime.windows import Windows
from node.storage.store_dirty import Change


class Journal:
    def __init__(self) -> None:
        self.afters: dict[Key, Change] = {}  # counter -> the last change handed on
        self.touched: dict[SpaceKey, int] = {}  # -> the earliest minute changed since
        self.names: dict[SpaceKey, set[str]] = {}  # -> the names whose entries changed since
        self.dropped: set[int] = set()  # shards whose windows went: their rows go
        self.rewritten: set[int] = set()  # shards whose buckets were replaced (catch-up)
        # Shards whose file rows await a restore (window_persist.py): their changes until
        # then are the restore's tail, so neither the windows nor the journal take them.
        self.restoring: set[int] = set()

    def touch(self, space: SpaceKey, minute: int, names: Iterable[str]) -> None:
        """`names`' entries of the space's buckets changed, in `minute` or later."""
        earliest = self.touched.get(space)
        if earliest is None or minute < earliest:
            self.touched[space] = minute
        self.names.setdefault(space, set()).update(names)

    def drop(self, shard: int) -> None:
        self.dropped.add(shard)
        self.rewritten.discard(shard)

    def take(self, windows: Windows) -> Batch:
        """The batch to write, its entries read from `windows` now."""
        afters, self.afters = self.afters, {}
        touched, self.touched = self.touched, {}
        names, self.names = self.names, {}
        dropped, self.dropped = self.dropped, set()
        rewritten, self.rewritten = self.rewritten - dropped, set()
        if dropped:
            afters = {key: change for key, change in afters.items() if change[1] not in dropped}
        buckets: dict[BucketKey, dict[str, int]] = {}
        for shard in rewritten:
            for (tenant, namespace), window in windows.spaces(shard):
                for minute, bucket in zip(window.minutes, window.deltas, strict=True):
                    buckets[(shard, tenant, namespace, minute)] = bucket.copy()
        entries: dict[BucketKey, dict[str, int]] = {}
        for space, changed in names.items():
            shard, tenant, namespace = space
            # A dropped shard's rows go first (window_file.py): what it holds now was
            # observed since, and must be written (an entry of before the drop is not found)
            if shard in rewritten:  # its buckets go whole
                continue
            found = windows.get(shard, tenant, namespace)
            if found is None:
                continue
            earliest, minutes, deltas = touched[space], found.minutes, found.deltas
            if minutes and minutes[-1] == earliest:  # the usual case: all in the newest minute
                bucket = deltas[-1]
                if 2 * len(changed) >= len(bucket):  # most of it: whole, as cheap to write
                    buckets[(shard, tenant, namespace, earliest)] = bucket.copy()
                    continue
                try:  # each name changed went to this bucket: read in C, no loop here
                    values = map(bucket.__getitem__, changed)
                    entries[(shard, tenant, namespace, earliest)] = dict(
                        zip(changed, values, strict=True)
                    )
                    continue
                except KeyError:  # not expected: read as below
                    pass
            index = len(minutes) - 1
            while index >= 0 and minutes[index] >= earliest:  # the newest minute or two
                bucket = deltas[index]
                if len(changed) < len(bucket):
                    held = [name for name in changed if name in bucket]
                else:
                    held = [name for name in bucket if name in changed]
                if held:
                    entries[(shard, tenant, namespace, minutes[index])] = {
                        name: bucket[name] for name in held
                    }
                index -= 1
        return Batch(buckets, afters, {}, dropped, rewritten, entries=entries)

    def give_back(self, batch: Batch) -> None:
        """A failed write's batch, under what was journaled since."""
        for key, change in batch.afters.items():
            self.afters.setdefault(key, change)
        for (shard, tenant, namespace, minute), entries in batch.entries.items():
            self.touch((shard, tenant, namespace), minute, entries)
        for (shard, tenant, namespace, minute), bucket in batch.buckets.items():
            if shard not in batch.rewritten:  # a bucket mostly changed, taken whole
                self.touch((shard, tenant, namespace), minute, bucket)
        self.dropped |= batch.dropped
        self.rewritten |= batch.rewritten - self.dropped

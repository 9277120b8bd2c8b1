"""Windows that survive a restart of every node: written to the window file, restored at start.

Writing. Every `WRITE_INTERVAL_S` (and once more at a clean stop, after the change tap's
last turn) the journal's batch goes to the window file in a worker thread: the bucket
entries changed since the last write (journal.py), each changed counter's value as the tap
last handed it on, and per shard observed its coverage and `through_ms` (P, the take's
time). A shard is *whole* when the file has the value of every counter it holds here:
every counter came to this node's windows as a change (observed since ever), or the shard
was restored (below), or a write handed the journal every counter's value first
(`make_whole`: a shard observed from a cut after a start without a restorable file, or one
that took hand-off arrivals, such as a shard gained in a join). Loads since end that until
the next write makes it whole again; a drop of the shard ends it for the rest of the
observation.

Restoring. At start the file's whole shards wait (`journal.restoring`): the change tap's
changes of them, recovery merges included, go to neither windows nor journal, and queries
see them as observed from now on. Once this node is recovered and has pulled every
replica of the shard (one down at its recovery is waited for, RESTORE_WAIT_S at most: its
own copy of replicated slots is written behind, so without the others' its values may lack
what it observed, and their return would count twice; past the wait the shard is observed
from a cut, as without a file), each such shard it is still a replica of is restored in
one loop turn: its buckets from the file, and per counter its tail, the value the tap has
handed on now minus the value the file holds for P (0 for a counter it did not hold then;
minus that value for one it no longer holds), added to the bucket of P's minute. Each
change of a counter is then counted exactly once: a change handed on before P is in the
file's buckets, and the file's value for P is the value after it; one after P and before
the restore is in the tail, and neither in a bucket nor in the journal; one after it is
observed live. The tail's changes all came after P, so every window that begins at or
before P's minute is exact, and so is any that begins at or after the restore's cut;
windows between (a gap: a restart that ends in a later minute than P's leaves one) are not
answered here (coverage.py). Past that, the bound is the windows' own: a change lands in
the minute a replica observed it, within the replication delay of when it was made. A kill
-9 loses at most the changes since the last write (a second) from the buckets, and none
from the windows' sums: they are the tail (the values are durable with `--durability
sync`; with async durability, a value lost with the write-behind is lost to the window
too). A SIGTERM writes after the tap's last turn, so P is the stop and the tail holds only
what other replicas took afterwards.

Replicas restored at different P (one was down longer) answer the same windows exactly for
those they cover; the one with the latest P covers the most, and the catch-up (fanout.py)
lets the others take its buckets before their own live cut (coverage.better). A node
restarted while the others stay up gets a gap from its P to its restart, and the catch-up
takes the live replicas' buckets, as it did before. A file that is absent, unreadable, older
than the longest window or not whole restores nothing: those shards are observed from the
next minute, and answers say `complete: false` until a replica observed the window whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from node.base.keys import Key
from node.base.threads import in_thread
from node.realtime.buckets import Buckets
from node.realtime.coverage import Observation
from node.realtime.journal import Journal
from node.realtime.service import Realtime
from node.realtime.window_file import (
    FILE_NAME,
    Loaded,
    Space,
    Stored,
    WindowFile,
    WindowFileError,
)
from node.realtime.windows import MAX_SPAN_MIN, MINUTE_MS, first_minute
from node.storage.store_dirty import Change

WRITE_INTERVAL_S = 1.0  # how often the window file takes the journal: what a kill -9 loses
# Shards made whole per write (Realtime.make_whole: every counter's value to the file): a
# start without a restorable file makes all of them so within a few seconds, in pieces.
WHOLE_PER_WRITE = 32
RESTORE_WAIT_S = 30.0  # how long a restore waits for a replica down at recovery to be pulled
log = logging.getLogger("counters.realtime")


async def open_window_file(data_dir: Path, now_ms: int) -> tuple[WindowFile, dict[int, Stored]]:
    """The data dir's window file, and the shards it can restore (written through within the
    longest window). An unreadable one is set aside and a new one begun (window_file.py)."""

    def opened() -> tuple[WindowFile, dict[int, Stored]]:
        data_dir.mkdir(parents=True, exist_ok=True)
        file = WindowFile(data_dir / FILE_NAME)
        try:
            return file, file.observations(now_ms - MAX_SPAN_MIN * MINUTE_MS)
        except WindowFileError as error:
            log.warning("window file not restored: %s", error)
            return file, {}

    return await in_thread(opened)


def tails(
    spaces: Iterable[tuple[str, str, dict[str, int]]],
    pending: Mapping[Key, int],
    afters: Mapping[Space, Mapping[str, int]],
) -> dict[Key, tuple[int, int]]:
    """Per counter whose value moved since P: (its tail, its value as handed on now), from
    the shard's values now per namespace (`spaces`, dicts this may change) and the file's
    (`afters`). A change the tap has yet to hand on is not in it (the tap hands it on, from
    `pending`). A counter held at P and not now (its writes lost with every copy) moved to
    0: should it come back, it comes as a change. A namespace whose values equal the file's
    (every one after a clean stop) costs one dict comparison, in C."""
    waiting: dict[Space, dict[str, int]] = {}
    for (tenant, namespace, name), before in pending.items():
        waiting.setdefault((tenant, namespace), {})[name] = before
    out = {}
    seen_spaces = set()
    for tenant, namespace, values in spaces:
        space = (tenant, namespace)
        seen_spaces.add(space)
        for name, before in waiting.get(space, {}).items():
            if name in values:
                values[name] = before
        after = afters.get(space, {})
        if values == after:
            continue
        for name, seen in values.items():
            tail = seen - after.get(name, 0)
            if tail:
                out[(tenant, namespace, name)] = (tail, seen)
        for name, value in after.items():
            if value and name not in values:
                out[(tenant, namespace, name)] = (-value, 0)
    for space, after in afters.items():
        if space not in seen_spaces:
            for name, value in after.items():
                if value:
                    out[(*space, name)] = (-value, 0)
    return out


def shared_names(buckets: Buckets, spaces: Iterable[tuple[str, str, Mapping[str, int]]]) -> Buckets:
    """The buckets keyed by the store's own name strings where it holds the name: the
    file's are new strings, a copy of each name per minute (80 B per counter at a million
    with two minutes of changes, for as long as the minutes stay)."""
    for tenant, namespace, held in spaces:
        minutes = buckets.get((tenant, namespace))
        if not minutes:
            continue
        for index, (minute, bucket) in enumerate(minutes):
            shared = {name: bucket[name] for name in held if name in bucket}
            if len(shared) < len(bucket):  # counters the store no longer holds keep theirs
                for name, delta in bucket.items():
                    shared.setdefault(name, delta)
            minutes[index] = (minute, shared)
    return buckets


def with_tails(buckets: Buckets, moved: Mapping[Key, tuple[int, int]], minute: int) -> Buckets:
    """The buckets with each tail added to the bucket of `minute` (made where missing)."""
    for (tenant, namespace, name), (tail, _) in moved.items():
        minutes = buckets.setdefault((tenant, namespace), [])
        index = 0
        while index < len(minutes) and minutes[index][0] < minute:
            index += 1
        if index == len(minutes) or minutes[index][0] != minute:
            minutes.insert(index, (minute, {}))
        bucket = minutes[index][1]
        bucket[name] = bucket.get(name, 0) + tail
    return buckets


class WindowPersister:
    """The window file's loop: restore what waits once recovered, write every second."""

    def __init__(
        self,
        realtime: Realtime,
        journal: Journal,
        file: WindowFile,
        stored: dict[int, Stored],
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        unpulled: Callable[[int], bool] = lambda shard: False,
    ) -> None:
        self.realtime = realtime
        # whether a replica of the shard was down when this node recovered, so its state
        # was not pulled yet (cluster/handoff.py): the values then may lack what this node
        # had observed, which would count it twice; the restore waits (RESTORE_WAIT_S)
        self.unpulled = unpulled
        self.live_since_ms: int | None = None
        self.journal = journal
        self.file = file
        self.clock_ms = clock_ms
        self.stored = {shard: s for shard, s in stored.items() if s.whole}
        journal.restoring |= set(self.stored)
        journal.dropped |= set(stored) - set(self.stored)  # not restorable: their rows go
        self.last_write_ms = 0
        self.writes = 0
        self.restored = 0  # shards restored from the file
        self.tail_counters = 0  # counters whose tail a restore added
        self.given_up = 0  # shards not restored: a replica stayed unpulled too long
        self._written: dict[int, tuple[Observation, bool]] = {}  # the file's rows, per shard

    async def turn(self) -> None:
        if self.journal.restoring and self.realtime.live:
            if self.live_since_ms is None:
                self.live_since_ms = self.clock_ms()
            await self.restore()
        if self.clock_ms() - self.last_write_ms >= WRITE_INTERVAL_S * 1000:
            await self.write()

    async def restore(self) -> None:
        journal, realtime = self.journal, self.realtime
        waited = self.clock_ms() - (self.live_since_ms or 0) > RESTORE_WAIT_S * 1000
        for shard in sorted(journal.restoring):
            if self.unpulled(shard) and not waited:
                continue
            stored = self.stored.pop(shard)
            if not realtime.is_replica(shard) or self.unpulled(shard):
                journal.restoring.discard(shard)  # observed from a cut, as without a file
                journal.drop(shard)
                self.given_up += self.unpulled(shard)
                continue
            try:
                loaded = await in_thread(self.file.load, shard)
            except WindowFileError:
                self.stored[shard] = stored  # tried again next turn
                raise
            self._restore(shard, stored, loaded)
        if not journal.restoring:
            log.info(
                "windows restored from the window file",
                extra={"shards": self.restored, "tail_counters": self.tail_counters},
            )

    def _restore(self, shard: int, stored: Stored, loaded: Loaded) -> None:
        """In one loop turn: between the values read and the shard observed live, the tap
        hands nothing on."""
        journal, realtime, store = self.journal, self.realtime, self.realtime.store
        spaces = list(store.space_values(shard))
        moved = tails(spaces, store.pending_changes(), loaded.afters)
        minute = stored.through_ms // MINUTE_MS
        buckets = with_tails(shared_names(loaded.buckets, spaces), moved, minute)
        observation = stored.observation.restored(stored.through_ms, self.clock_ms())
        journal.restoring.discard(shard)
        realtime.install(shard, observation, buckets, whole=True)
        for key, (tail, seen) in moved.items():
            journal.touch((shard, key[0], key[1]), minute, (key[2],))
            journal.afters[key] = Change(key, shard, seen - tail, seen)
        self.restored += 1
        self.tail_counters += len(moved)

    async def write(self) -> None:
        """One batch to the file, in a worker thread; a failed one is given back."""
        realtime, now_ms = self.realtime, self.clock_ms()
        assert realtime.windows is not None
        pending: Mapping[Key, int] | None = None
        made = 0
        for shard in list(realtime.since):  # observed, but not restorable yet
            if made < WHOLE_PER_WRITE and not realtime.whole(shard):
                if pending is None:
                    pending = realtime.store.pending_changes()
                made += realtime.make_whole(shard, pending)
        batch = self.journal.take(realtime.windows)
        # Every shard observed is written through now: by one row of the file's (its
        # `through_ms`) once no shard waits for a restore (whose rows' own P must stay);
        # until then, by each shard's row. A shard's row otherwise goes only when it moves.
        waiting = bool(self.journal.restoring)
        written = self._written
        for shard in realtime.since:
            observation, whole = realtime.observation(shard), realtime.whole(shard)
            if waiting or written.get(shard) != (observation, whole):
                batch.observed[shard] = Stored(observation, now_ms, whole)
        batch.through_ms = 0 if waiting else now_ms
        batch.oldest_minute = first_minute(now_ms, MAX_SPAN_MIN)
        self.last_write_ms = now_ms
        try:
            await in_thread(self.file.write, batch)
        except WindowFileError:
            self.journal.give_back(batch)
            raise
        for shard in batch.dropped:
            written.pop(shard, None)
        for shard, stored in batch.observed.items():
            written[shard] = (stored.observation, stored.whole)
        self.writes += 1

    async def close(self) -> None:
        """The last write (a clean stop loses nothing), then the file closes."""
        try:
            await self.write()
        finally:
            await in_thread(self.file.close)

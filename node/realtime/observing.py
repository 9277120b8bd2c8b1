"""Which shards this node observes, since when, and with which gaps: the part of its
real-time state (service.py) that decides which windows it answers exactly.

A replica's windows hold what it saw change since it began observing a shard: from the
minute boundary after its first turn after recovery at start (its own loads and recovery
pulls are done by then, so none of them lands in a minute it claims), or after it became a
replica of a shard it gained (the hand-off is done by then). `since[shard]` is that
boundary, or 0 when its windows saw the whole history of the shard's counters here: every
counter it holds came as a change (none loaded, handed over or dropped) and every change of
it came while this node was a recovered replica of it, so the windows hold each change at
the minute it reached this node, as any full observer's do. A new cluster's windows are so
complete from its first write, whether that write reached a node before or after the node's
first turn (the turn is only when it notices; deciding by "holds no counter at the first
turn" made a node that took writes in the half second before it misjudge itself a late
observer, which left a shard without a full observer once a join moved the other one away:
issue 14). A shard restored from the window file (window_persist.py) is observed from the
start it had before the stop, with a gap for the stop (`gaps`, coverage.py).

A window is complete at a replica when it began at or after `since` and in no gap; asked
strictly, a replica refuses the shards it cannot answer completely and says since when it
observes them, and the asker tries the next replica (fanout.py). A restarted node without
a restorable window file, or a new replica of a shard, so answers only windows that began
after it came, until, once its clock is past the cut, it takes the older buckets from a
replica that saw them (buckets.py). When no live replica observed a window whole (a
cluster restarted within it with no window files, or a stop longer than the window), the
answer says so (`complete: false` with the time observation began) and counts exactly the
changes since: what is lost is the changes before it. Windows are not seeded from the
minute history (README says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from node.base.keys import Key
from node.realtime.answers import AnswerCache
from node.realtime.buckets import SETTLE_MS, Buckets, adopt
from node.realtime.coverage import Gap, Observation, better, cut_minute
from node.realtime.journal import Journal
from node.realtime.windows import MAX_SPAN_MIN, MINUTE_MS, Windows, first_minute
from node.storage.store import CounterStore
from node.storage.store_dirty import Change


class Observing:
    """Which shards this node observes: the base of Realtime (service.py)."""

    def __init__(
        self,
        store: CounterStore,
        shard_count: int,
        is_replica: Callable[[int], bool],
        recovered: Callable[[], bool],
        windows: bool = True,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.shard_count = shard_count
        self.is_replica = is_replica
        self.recovered = recovered
        self.clock_ms = clock_ms
        self.windows: Windows | None = Windows() if windows else None
        self.since: dict[int, int] = {}  # shard -> unix ms this node observes it from
        self.gaps: dict[int, tuple[Gap, ...]] = {}  # shard -> its restores' gaps (coverage.py)
        # What the window file is yet to take (window_persist.py); None: no window file.
        self.journal = journal if self.windows is not None else None
        # per shard whose every counter's value the journal has had handed on (a shard
        # observed whole, or restored): the store's (drops, arrivals) then; other loads
        # or drops since end it (`whole`)
        self.whole_marks: dict[int, tuple[int, int]] = {}
        # per shard observed: the store's drops of it when observing began; one since (a
        # shard dropped and gained back between turns) keeps it from being made whole
        self.base_drops: dict[int, int] = {}
        self.caught_up: set[int] = set()  # shards whose older buckets need no catch-up
        # Shards with a change the windows took while this node was not a recovered replica
        # of them (recovery merges, frames before a hand-off), or whose windows it dropped:
        # their windows lack or misplace history, so observing them starts at a cut.
        self.unseen: set[int] = set()
        self._live = False  # recovered() as last seen (watch)
        self.answers = AnswerCache()  # answers.py: repeated queries, until something moves

    @property
    def live(self) -> bool:
        """Recovered, as the change tap's last turn saw it."""
        return self._live

    def watch(self) -> None:
        """Note the instant this node is recovered: the changes the store holds for the tap
        so far may be recovery merges. The change tap calls it before each take, so no
        change made after recovery is taken for one made before it."""
        live = self.recovered()
        if live and not self._live:
            self.unseen |= self.store.pending_shards()
        self._live = live

    def observed_whole(self, shard: int) -> bool:
        """Whether this node's windows hold every change of the shard's counters here (see
        the module's docstring): then it observes the shard since ever (0)."""
        store = self.store
        return (
            shard not in self.unseen
            and not store.arrivals.get(shard, 0)
            and not store.drops.get(shard, 0)
        )

    def observe(self, now_ms: int) -> None:
        """Start or stop observing shards as this node becomes or stops being a replica."""
        self.watch()
        if not self._live:
            return
        windows = self.windows
        restoring = () if self.journal is None else self.journal.restoring
        for shard in range(self.shard_count):
            if self.is_replica(shard):
                if shard not in self.since and shard not in restoring:
                    self.base_drops[shard] = self.store.drops.get(shard, 0)
                    # Else from the next minute: the one under way may hold recovery merges.
                    if self.observed_whole(shard):
                        self.since[shard] = 0
                        self.caught_up.add(shard)
                        self.whole_marks[shard] = (0, 0)
                    else:
                        self.since[shard] = cut_minute(now_ms) * MINUTE_MS
                    self.answers.clear()
            elif shard in self.since:
                del self.since[shard]
                self.gaps.pop(shard, None)
                self.base_drops.pop(shard, None)
                self.whole_marks.pop(shard, None)
                self.answers.clear()
                self.caught_up.discard(shard)
                self.unseen.add(shard)
                if windows is not None:
                    windows.drop_shard(shard)
                if self.journal is not None:
                    self.journal.drop(shard)
        if windows is not None:
            windows.prune(now_ms)
        oldest = first_minute(now_ms, MAX_SPAN_MIN)
        for shard, gaps in list(self.gaps.items()):
            self.gaps[shard] = Observation(0, gaps).pruned(oldest).gaps

    def observation(self, shard: int) -> Observation:
        """Which windows of the shard this node answers exactly (it observes it)."""
        return Observation(self.since[shard], self.gaps.get(shard, ()))

    def whole(self, shard: int) -> bool:
        """Whether the journal has had every counter of the shard handed on (restorable)."""
        store = self.store
        now = (store.drops.get(shard, 0), store.arrivals.get(shard, 0))
        return self.whole_marks.get(shard) == now

    def make_whole(self, shard: int, pending: Mapping[Key, int]) -> bool:
        """Hand the journal the value of every counter of an observed shard it may lack one
        of (observed from a cut after a load, or since taking hand-off arrivals), so the
        window file can restore it (window_persist.py); True when done. The value is the one
        the tap has handed on (`pending`: before a change it has yet to hand on), so a
        restore's tail (now minus it) holds exactly the changes handed on after the file's
        write. Not after a drop of the shard during this observation: the file may hold
        values of counters gone since, whose tails would be wrong; nor while the file's
        rows of the shard wait to be dropped (the write drops its values with them)."""
        journal, store = self.journal, self.store
        if journal is None or shard not in self.since or shard in journal.restoring:
            return False
        if shard in journal.dropped:  # its rows go with the next write, these values too
            return False
        drops = store.drops.get(shard, 0)
        if drops != self.base_drops.get(shard):
            return False
        afters = journal.afters
        for key, value in store.shard_values(shard):
            seen = pending.get(key, value)
            afters[key] = Change(key, shard, seen, seen)
        self.whole_marks[shard] = (drops, store.arrivals.get(shard, 0))
        return True

    def catch_up_due(self, now_ms: int) -> list[int]:
        """Shards observed from a cut this clock is past: time to take older buckets."""
        return [
            shard
            for shard in self.since
            if shard not in self.caught_up
            and now_ms >= self.observation(shard).live_cut() * MINUTE_MS + SETTLE_MS
        ]

    def adopt(self, shard: int, ours: Observation, theirs: Observation, buckets: Buckets) -> bool:
        """Take a replica's buckets before our live cut, if its observation answers more
        windows (coverage.py) and ours is still `ours`; True when taken."""
        cut = ours.live_cut()
        if shard not in self.since or self.observation(shard) != ours:
            return False
        if not better(theirs, ours, cut):
            return False
        if self.windows is not None:
            adopt(self.windows, shard, cut, buckets)
        if self.journal is not None:
            self.journal.rewritten.add(shard)
        self.since[shard] = theirs.since_ms
        self.gaps[shard] = theirs.gaps
        self.answers.clear()
        return True

    def install(self, shard: int, observation: Observation, buckets: Buckets, whole: bool) -> None:
        """Observe the shard as restored (window_persist.py): these buckets, this coverage."""
        if self.windows is not None:
            self.windows.drop_shard(shard)
            adopt(self.windows, shard, cut_minute(self.clock_ms()) + 1, buckets)
        self.since[shard] = observation.since_ms
        self.gaps[shard] = observation.gaps
        if observation == Observation():  # observed since ever, no gap: nothing is better
            self.caught_up.add(shard)
        else:
            self.caught_up.discard(shard)
        store = self.store
        self.base_drops[shard] = store.drops.get(shard, 0)
        if whole:
            self.whole_marks[shard] = (store.drops.get(shard, 0), store.arrivals.get(shard, 0))
        self.answers.clear()

    def _start(self, shard: int, first: int) -> int:
        """The first minute the shard's buckets sum exactly from, for a window beginning at
        minute `first` (coverage.py; no object made: a query asks it of every shard)."""
        start = max(first, cut_minute(self.since.get(shard, 0)))
        for low, high in self.gaps.get(shard, ()):
            if low < start < high:
                start = high
        return start

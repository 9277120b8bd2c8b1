"""This node's real-time state: windows and value indexes fed by the change tap, and the
answers to queries about its shards.

Observation. A replica's windows hold what it saw change since it began observing a shard:
from the minute boundary after its first turn after recovery at start (its own loads and
recovery pulls are done by then, so none of them lands in a minute it claims), or after it
became a replica of a shard it gained (the hand-off is done by then). `since[shard]` is
that boundary, or 0 when its windows saw the whole history of the shard's counters here:
every counter it holds came as a change (none loaded, handed over or dropped) and every
change of it came while this node was a recovered replica of it, so the windows hold each
change at the minute it reached this node, as any full observer's do. A new cluster's
windows are so complete from its first write, whether that write reached a node before or
after the node's first turn (the turn is only when it notices; deciding by "holds no
counter at the first turn" made a node that took writes in the half second before it
misjudge itself a late observer, which left a shard without a full observer once a join
moved the other one away: issue 14). A window is complete at a
replica when it began at or after `since`; asked strictly, a replica refuses the shards it
cannot answer completely and says since when it observes them, and the asker tries the next
replica (fanout.py). A restarted node or a new replica of a shard so answers only windows
that began after it came, until, once its clock is past the cut, it takes the older
buckets from a replica that saw them (buckets.py). When no live replica observed a window
whole (the whole cluster restarted within it), the answer says so (`complete: false` with
the time observation began) and counts exactly the changes since (`_first`): what is lost
is the changes before it. Windows are not seeded from the minute history (README says why).

Totals and indexes follow the store shard by shard; a shard that took counters without
changes (loads, hand-off arrivals) or that the store dropped is re-read from the store
before a query reads it. An answer to an aggregate or top k is kept and served again, for
the same shards done and refused, until something it read moves (answers.py): a dashboard
polling a top k of a million counters costs one computation per change, not per poll.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from node.realtime.answers import AnswerCache
from node.realtime.buckets import SETTLE_MS, Buckets, adopt, export
from node.realtime.changes import Change
from node.realtime.coverage import Gap, Observation, better, cut_minute
from node.realtime.index import NamespaceIndex, ValueIndex, top_by_value
from node.realtime.journal import Journal
from node.realtime.query import Answer, By, Kind, Query
from node.realtime.windows import (
    MAX_SPAN_MIN,
    MINUTE_MS,
    Windows,
    first_minute,
    window_start_ms,
)
from node.storage.store import CounterStore

NOT_HELD = -1


class Realtime:
    """Change subscriber and local query answerer for one node."""

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
        self.index = ValueIndex()
        self.windows: Windows | None = Windows() if windows else None
        self.since: dict[int, int] = {}  # shard -> unix ms this node observes it from
        self.gaps: dict[int, tuple[Gap, ...]] = {}  # shard -> its restores' gaps (coverage.py)
        # What the window file is yet to take (window_persist.py); None: no window file.
        self.journal = journal if self.windows is not None else None
        # per shard whose every counter's value the journal has had handed on (a shard
        # observed whole, or restored): the store's (drops, arrivals) then; other loads
        # or drops since end it (`whole`)
        self.whole_marks: dict[int, tuple[int, int]] = {}
        self._minute = 0  # the latest minute changes went to: a clock stepping back stays
        self.caught_up: set[int] = set()  # shards whose older buckets need no catch-up
        # Shards with a change the windows took while this node was not a recovered replica
        # of them (recovery merges, frames before a hand-off), or whose windows it dropped:
        # their windows lack or misplace history, so observing them starts at a cut.
        self.unseen: set[int] = set()
        self._live = False  # recovered() as last seen (watch)
        # per shard: the store's drops and arrivals the index has seen (stale_shards)
        self._seen: dict[int, tuple[int, int]] = {}
        self.rebuilds = 0  # shards indexed afresh from the store
        self.answers = AnswerCache()  # answers.py: repeated queries, until something moves
        self.kept_answers = 0  # queries answered from it
        self.queries: dict[Kind, int] = {kind: 0 for kind in Kind}  # answered here

    # -- feeding ----------------------------------------------------------------------------

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

    def on_changes(self, changes: Sequence[Change], at_ms: int) -> None:
        minute = at_ms // MINUTE_MS
        index_change = self.index.change
        windows = self.windows
        if windows is None:
            for (tenant, namespace, name), shard, before, after in changes:
                index_change(shard, tenant, namespace, name, before, after)
            if self.answers:
                self.answers.changed({change[0][:2] for change in changes})
            return
        window_add = windows.add
        since, live, is_replica, unseen = self.since, self._live, self.is_replica, self.unseen
        if self.journal is not None:
            self._journaled(changes, max(minute, self._minute))
            return
        for (tenant, namespace, name), shard, before, after in changes:
            index_change(shard, tenant, namespace, name, before, after)
            if after != before:  # else a counter new here at 0: named, not a change
                window_add(shard, tenant, namespace, name, minute, after - before)
            if shard not in since and not (live and is_replica(shard)):
                unseen.add(shard)
        if self.answers:
            self.answers.changed({change[0][:2] for change in changes})

    def _journaled(self, changes: Sequence[Change], minute: int) -> None:
        """on_changes with a window file: the same, and the journal takes each change."""
        assert self.windows is not None and self.journal is not None
        self._minute = minute
        index_change, window_add = self.index.change, self.windows.add
        since, live, is_replica, unseen = self.since, self._live, self.is_replica, self.unseen
        journal = self.journal
        deltas, afters, restoring = journal.minute(minute), journal.afters, journal.restoring
        for change in changes:
            key, shard, before, after = change
            tenant, namespace, name = key
            index_change(shard, tenant, namespace, name, before, after)
            if shard not in since and not (live and is_replica(shard)):
                unseen.add(shard)
            if restoring and shard in restoring:
                continue  # the restore's tail (window_persist.py)
            if after != before:
                window_add(shard, tenant, namespace, name, minute, after - before)
                deltas[key] = deltas.get(key, 0) + after - before
            afters[key] = change
        if self.answers:
            self.answers.changed({change[0][:2] for change in changes})

    def stale_shards(self) -> list[int]:
        """Shards the store dropped, or took counters into without changes (loads,
        hand-off arrivals), since the index last looked at them."""
        drops, arrivals, seen = self.store.drops, self.store.arrivals, self._seen
        return [
            shard
            for shard in drops.keys() | arrivals.keys()
            if (drops.get(shard, 0), arrivals.get(shard, 0)) != seen.get(shard, (0, 0))
        ]

    def rebuild(self, shard: int) -> None:
        """Totals and indexes in use of a shard afresh from the store."""
        store = self.store
        self._seen[shard] = (store.drops.get(shard, 0), store.arrivals.get(shard, 0))
        totals: dict[tuple[str, str], int] = {}
        # A change the tap has yet to hand on will add (after - before): count it from before.
        pending = store.pending_changes()
        for key, value in store.shard_values(shard):
            space = (key[0], key[1])
            totals[space] = totals.get(space, 0) + pending.get(key, value)
        self.index.reset(
            shard, totals, lambda space: store.namespace_values(shard, space[0], space[1])
        )
        self.rebuilds += 1
        self.answers.clear()

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
        self.index.forget_idle(now_ms)

    def observation(self, shard: int) -> Observation:
        """Which windows of the shard this node answers exactly (it observes it)."""
        return Observation(self.since[shard], self.gaps.get(shard, ()))

    def whole(self, shard: int) -> bool:
        """Whether the journal has had every counter of the shard handed on (restorable)."""
        store = self.store
        now = (store.drops.get(shard, 0), store.arrivals.get(shard, 0))
        return self.whole_marks.get(shard) == now

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
        self.caught_up.discard(shard)
        if whole:
            store = self.store
            self.whole_marks[shard] = (store.drops.get(shard, 0), store.arrivals.get(shard, 0))
        self.answers.clear()

    async def turn(self) -> None:
        """One supervised turn: observe. Stale shards are re-read when a query needs them
        (`prepare`), not here: after a restart that is a million counters' values, which
        a node nobody asks need not spend."""
        self.observe(self.clock_ms())

    # -- answering --------------------------------------------------------------------------

    async def prepare(self, query: Query) -> None:
        """Build what `answer` will read and lacks (stale shards re-read from the store,
        namespace indexes, rankings), one shard per loop turn: a first query of a big
        namespace, or the first after a restart, does not stall the node."""
        if query.kind in (Kind.AGGREGATE, Kind.TOP):
            for shard in set(self.stale_shards()) & set(query.shards):
                self.rebuild(shard)
                await asyncio.sleep(0)
        if self.answers.get(query, len(self.store), self.clock_ms()) is not None:
            return  # answer() will serve the kept answer: nothing to build
        needs_index = (query.kind is Kind.AGGREGATE and query.prefix) or (
            query.kind is Kind.TOP and query.by is By.VALUE
        )
        ranks = query.kind is Kind.TOP and query.by is By.CHANGE and query.span_min
        if not (needs_index or ranks):
            return
        first, now_ms = first_minute(query.at_ms, query.span_min), self.clock_ms()
        tenant, namespace = query.tenant, query.namespace
        for shard in query.shards:
            built = False
            if needs_index and self.store.namespace_size(shard, tenant, namespace):
                built = not self.index.has(shard, (tenant, namespace))
                self._namespace(shard, query)
            window = None if self.windows is None else self.windows.get(shard, tenant, namespace)
            if ranks and window is not None:
                built = built or query.span_min not in window.rankings
                window.ranking(query.span_min, first, now_ms)
            if built:
                await asyncio.sleep(0)

    def answer(self, query: Query) -> Answer:
        """This node's part of a query: the shards it can answer, the others refused."""
        self.queries[query.kind] += 1
        answer = Answer()
        start_ms = window_start_ms(query.at_ms, query.span_min) if query.span_min else 0
        if any(shard not in self.since for shard in query.shards):
            self.observe(self.clock_ms())  # recovered or handed over since the last turn
        first = start_ms // MINUTE_MS
        for shard in query.shards:
            since = self.since.get(shard)
            if since is None or not self.is_replica(shard):
                answer.refused[shard] = NOT_HELD
                continue
            if query.span_min:
                since = max(since, self._start(shard, first) * MINUTE_MS)
            if query.strict and query.span_min and since > start_ms:
                answer.refused[shard] = since
            else:
                answer.done.append(shard)
                answer.since_ms = max(answer.since_ms, since)
        if query.kind in (Kind.AGGREGATE, Kind.TOP):  # values read: none stale
            for shard in set(self.stale_shards()) & set(answer.done):
                self.rebuild(shard)  # arrived since `prepare`, or asked without it
            counters, now_ms = len(self.store), self.clock_ms()
            kept = self.answers.get(query, counters, now_ms)
            if kept is not None and (kept.done, kept.refused) == (answer.done, answer.refused):
                self.kept_answers += 1
                return kept
        if query.kind is Kind.BUCKETS:
            self._buckets(query, answer)
        elif query.kind is Kind.WINDOW:
            self._window(query, answer)
        elif query.kind is Kind.AGGREGATE:
            self._aggregate(query, answer)
        elif query.by is By.VALUE:
            self._top_by_value(query, answer)
        else:
            self._top_by_change(query, answer)
        if query.kind in (Kind.AGGREGATE, Kind.TOP):
            self.answers.put(query, answer, counters, now_ms)
        return answer

    def _first(self, shard: int, query: Query) -> int:
        """The first minute this node sums for the shard: the window's, or, answering a
        window it did not observe whole (asked not strictly), the minute it began observing
        the shard, so the change is exactly the one since then (the minute under way at its
        start may hold recovery merges, which are not changes of that minute)."""
        return self._start(shard, first_minute(query.at_ms, query.span_min))

    def _start(self, shard: int, first: int) -> int:
        """The first minute the shard's buckets sum exactly from, for a window beginning at
        minute `first` (coverage.py; no object made: a query asks it of every shard)."""
        start = max(first, cut_minute(self.since.get(shard, 0)))
        for low, high in self.gaps.get(shard, ()):
            if low < start < high:
                start = high
        return start

    def _change(self, shard: int, query: Query, name: str) -> int | None:
        if not query.span_min:
            return None
        windows = self.windows
        window = None if windows is None else windows.get(shard, query.tenant, query.namespace)
        if window is None:
            return 0
        return window.change(name, self._first(shard, query))

    def _buckets(self, query: Query, answer: Answer) -> None:
        if self.windows is None or len(answer.done) != 1:
            answer.done.clear()
            return
        [shard] = answer.done
        since = self.since[shard] // MINUTE_MS
        answer.buckets = export(self.windows, shard, since, query.at_ms // MINUTE_MS)
        answer.gaps = list(self.gaps.get(shard, ()))

    def _window(self, query: Query, answer: Answer) -> None:
        for shard in answer.done:
            answer.change += self._change(shard, query, query.name) or 0

    def _namespace(self, shard: int, query: Query) -> NamespaceIndex:
        store, tenant, namespace = self.store, query.tenant, query.namespace
        return self.index.index(
            shard,
            (tenant, namespace),
            lambda: store.namespace_values(shard, tenant, namespace),
            self.clock_ms(),
        )

    def _aggregate(self, query: Query, answer: Answer) -> None:
        tenant, namespace = query.tenant, query.namespace
        for shard in answer.done:
            if query.prefix:
                counters, total = self._namespace(shard, query).aggregate(query.prefix)
            else:  # always kept: no index needed
                counters = self.store.namespace_size(shard, tenant, namespace)
                total = self.index.total(shard, tenant, namespace)
            answer.counters += counters
            answer.total += total
            if query.span_min and self.windows is not None:
                window = self.windows.get(shard, tenant, namespace)
                if window is not None:
                    answer.change += window.total(self._first(shard, query), query.prefix)

    def _top_by_value(self, query: Query, answer: Answer) -> None:
        found = [
            (shard, self._namespace(shard, query))
            for shard in answer.done
            if self.store.namespace_size(shard, query.tenant, query.namespace)
        ]
        top = top_by_value([index for _, index in found], query.prefix, query.k)
        answer.top = [
            (name, value, self._change(found[position][0], query, name))
            for name, value, position in top
        ]

    def _top_by_change(self, query: Query, answer: Answer) -> None:
        """The k largest nonzero changes: from each shard's ranking of the span (ranking.py),
        merged lazily; a shard whose ranking is past this query's first minute, or that this
        node observed only since after it (`_first`), is scanned."""
        if self.windows is None or not query.span_min:
            return
        first = first_minute(query.at_ms, query.span_min)
        now_ms = self.clock_ms()
        ranked: list[Iterator[tuple[int, str]]] = []
        for shard in answer.done:
            window = self.windows.get(shard, query.tenant, query.namespace)
            if window is None:
                continue
            shard_first = self._first(shard, query)
            ranking = None
            if shard_first == first:
                ranking = window.ranking(query.span_min, first, now_ms)
            if ranking is not None:
                items: Iterable[tuple[int, str]] = ranking.ranked_under(query.prefix)
            else:
                scanned = window.changes(shard_first, query.prefix)
                items = sorted((-change, name) for name, change in scanned.items() if change)
            ranked.append(iter(items))
        values = self.store.value
        tenant, namespace = query.tenant, query.namespace
        for negated, name in itertools.islice(heapq.merge(*ranked), query.k):
            value = values((tenant, namespace, name))
            answer.top.append((name, 0 if value is None else value, -negated))

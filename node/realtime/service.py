"""This node's real-time state: windows and value indexes fed by the change tap, and the
answers to queries about its shards. Which shards it observes since when, and so which
windows it answers exactly, is its base (observing.py).

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

from node.realtime.buckets import export
from node.realtime.changes import Change
from node.realtime.coverage import cut_minute
from node.realtime.index import NamespaceIndex, ValueIndex, top_by_value
from node.realtime.journal import Journal
from node.realtime.observing import Observing
from node.realtime.query import Answer, By, Kind, Query
from node.realtime.windows import (
    MINUTE_MS,
    first_minute,
    window_start_ms,
)
from node.storage.store import CounterStore

NOT_HELD = -1


class Realtime(Observing):
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
        super().__init__(store, shard_count, is_replica, recovered, windows, clock_ms, journal)
        self.index = ValueIndex()
        self._minute = 0  # the latest minute changes went to: a clock stepping back stays
        # per shard: the store's drops and arrivals the index has seen (stale_shards)
        self._seen: dict[int, tuple[int, int]] = {}
        self.rebuilds = 0  # shards indexed afresh from the store
        self.kept_answers = 0  # queries answered from it
        self.queries: dict[Kind, int] = {kind: 0 for kind in Kind}  # answered here

    # -- feeding ----------------------------------------------------------------------------

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
        touched, names, afters = journal.touched, journal.names, journal.afters
        restoring = journal.restoring
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
                space = (shard, tenant, namespace)
                changed = names.get(space)
                if changed is None:  # the first since the take: minutes never go back
                    changed = names[space] = set()
                    touched.setdefault(space, minute)
                changed.add(name)
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

    def observe(self, now_ms: int) -> None:
        """Observing.observe, and idle namespace indexes go."""
        super().observe(now_ms)
        if self.live:
            self.index.forget_idle(now_ms)

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
                index = self._namespace(shard, query)
                if query.kind is Kind.AGGREGATE:  # a prefix not learned is a pass over its run
                    built = index.learn(query.prefix) or built
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
            if since is None and self.journal is not None and shard in self.journal.restoring:
                since = cut_minute(query.at_ms) * MINUTE_MS  # not yet: as if from now on
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
        if len(answer.done) == 1:  # the counter's shard, as window_of asks
            [shard] = answer.done
            since = self.since.get(shard)  # None: restoring, counted from a cut meanwhile
            if since is not None and since <= query.at_ms:  # the minute under way counts
                key = (query.tenant, query.namespace, query.name)
                answer.seen = self.store.handed_value(key, shard)

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
        # each value as the tap handed it on, as the changes beside it and the indexes
        # count: not one newer than its change (nor than a kept answer, answers.py)
        values = self.store.handed_value
        tenant, namespace = query.tenant, query.namespace
        for negated, name in itertools.islice(heapq.merge(*ranked), query.k):
            answer.top.append((name, values((tenant, namespace, name)), -negated))

"""Windowed changes: per counter, per minute, the net change this replica observed.

A window of span W minutes, read at time t in minute c = t // 60 s, is the sum of the
buckets of minutes c - W .. c: the trailing W whole minutes and the current minute so far,
so it covers between W and W + 1 minutes and never less than asked. `rate_per_s` divides
by W minutes. Spans are 1m .. 24h at minute resolution; buckets older than the longest span
are dropped every turn, so state grows only with counters changed within the last 24 hours.

Memory, stated per counter: one dict entry (name -> net change) per minute in which the
counter changed, at most 1,441 of them; nothing for a counter unchanged for 24 hours but
its name's entry in the interpreter's table of interned strings. A name new to a bucket is
interned (`sys.intern`, once per counter and minute): each request decodes a new string of
it, and without that every minute's bucket kept its own copy (64 B for a short name). The
table's entry, about 42 B, lasts as long as anything holds the string: for a counter made
on this node the interned string is the store's own (the tap hands on its key), so the
entry lasts as long as the store holds the counter; in return the buckets share the store's
string. A counter loaded at start and changed after keeps two strings (the store's, and
the one the windows interned). Measured (`loadtest/bench_realtime.py`, a new string per
minute as requests give): 34 bytes per (counter, minute) with small changes, 28 more when
|change| > 256 (an int object); with ten minutes of changes 37 B per (counter, minute) all
told, the table included, where the copies made it 85. A counter changed every minute of a
day costs ~50-90 KB, one changed a few times an hour a few hundred bytes.

With a window file (window_persist.py) the journal also holds each counter changed since
its last write (one second) once, until the write takes it: bounded by a second's changes,
not by the day. Buckets are grouped per (shard, tenant, namespace), so a namespace's
aggregate never walks other namespaces, and a shard that leaves the node goes in one pop.

Top-by-change rankings (ranking.py) are kept per namespace window for at most MAX_RANKINGS
(8) spans, the most recently asked: a span asked anew while 8 are kept replaces the least
recently asked one, made again from the buckets (as any first query makes it), so however
many spans a tenant asks, a change updates at most 8 rankings (O(8 log n)) and a window's
rankings hold at most 8 x ~150 B per counter with a nonzero change in its spans (1.2 KB).
Answers are unchanged: a ranking always equals a scan of the buckets since its minute.

Which changes land in which minute is this replica's observation: the tap turn's time.
A write reaches each replica within the replication delay, so a window is exact for every
acknowledged write once replication has caught up: within replication delay + one tap turn
(0.1 s) of the write, and at a minute's edge a write may fall in the next minute at one
replica and not at another.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from sys import intern

from node.realtime.ranking import MAX_RANKINGS, RANKING_IDLE_MS, ChangeRanking

MINUTE_MS = 60_000
MAX_SPAN_MIN = 1440  # 24 h
_SPAN = re.compile(r"([1-9][0-9]{0,3})([mh])")


class BadSpan(ValueError):
    """A window span that is not 1m .. 24h."""


def parse_span(text: str) -> int:
    """'15m' -> 15, '2h' -> 120: minutes, 1 .. 1440; BadSpan otherwise."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise BadSpan(f"window {text[:20]!r} is not a span like 15m or 2h")
    minutes = int(match[1]) * (60 if match[2] == "h" else 1)
    if not 1 <= minutes <= MAX_SPAN_MIN:
        raise BadSpan(f"window {text!r} is outside 1m .. 24h")
    return minutes


def span_text(minutes: int) -> str:
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def first_minute(now_ms: int, span_min: int) -> int:
    """The oldest minute a window of span_min read at now_ms sums."""
    return now_ms // MINUTE_MS - span_min


def window_start_ms(now_ms: int, span_min: int) -> int:
    return first_minute(now_ms, span_min) * MINUTE_MS


class NamespaceWindow:
    """One (shard, tenant, namespace)'s minute buckets, oldest first: minute, name ->
    net change, and the bucket's total (so a whole-namespace sum costs one add a minute)."""

    __slots__ = ("deltas", "minutes", "rankings", "totals")

    def __init__(self) -> None:
        self.minutes: list[int] = []
        self.deltas: list[dict[str, int]] = []
        self.totals: list[int] = []
        # span in minutes -> ranking (ranking.py), least recently asked first: at most
        # MAX_RANKINGS, so a change updates a bounded number of them
        self.rankings: OrderedDict[int, ChangeRanking] = OrderedDict()

    def add(self, minute: int, name: str, delta: int) -> None:
        minutes = self.minutes
        if minutes and minute < minutes[-1]:
            minute = minutes[-1]  # a clock stepping back lands in the newest bucket
        if not minutes or minute > minutes[-1]:
            minutes.append(minute)
            self.deltas.append({})
            self.totals.append(0)
        bucket = self.deltas[-1]
        old = bucket.get(name)
        if old is None:
            name = intern(name)  # once per (name, minute), not per change: one string per name
            bucket[name] = delta
        else:
            bucket[name] = old + delta
        self.totals[-1] += delta
        for ranking in self.rankings.values():
            if minute >= ranking.first:  # a ranking ahead of this node's clock: not yet
                ranking.add(name, delta)

    def ranking(self, span_min: int, first: int, now_ms: int) -> ChangeRanking | None:
        """The ranking of changes since minute `first` (made, or rolled forward to it);
        None when the ranking is already past `first` (a query with an older clock). A
        span made anew while MAX_RANKINGS are kept replaces the least recently asked."""
        rankings = self.rankings
        ranking = rankings.get(span_min)
        if ranking is None:
            while len(rankings) >= MAX_RANKINGS:
                rankings.popitem(last=False)
            ranking = rankings[span_min] = ChangeRanking(first, self.changes(first, ""), now_ms)
        elif first < ranking.first:
            return None
        elif first > ranking.first:
            start = self._since(ranking.first)
            for minute, bucket in zip(self.minutes[start:], self.deltas[start:], strict=True):
                if minute >= first:
                    break
                for name, delta in bucket.items():
                    ranking.add(name, -delta)
            ranking.first = first
        ranking.used_ms = now_ms
        rankings.move_to_end(span_min)
        return ranking

    def prune(self, oldest: int, now_ms: int = 0) -> None:
        """Drop buckets older than minute `oldest`, and rankings idle or reaching them."""
        for span, ranking in list(self.rankings.items()):
            if ranking.first < oldest or now_ms - ranking.used_ms > RANKING_IDLE_MS:
                del self.rankings[span]
        minutes = self.minutes
        cut = 0
        while cut < len(minutes) and minutes[cut] < oldest:
            cut += 1
        if cut:
            del minutes[:cut], self.deltas[:cut], self.totals[:cut]

    def _since(self, first: int) -> int:
        """Index of the first bucket at or after minute `first`."""
        minutes = self.minutes
        index = len(minutes)
        while index and minutes[index - 1] >= first:
            index -= 1
        return index

    def change(self, name: str, first: int) -> int:
        return sum(bucket.get(name, 0) for bucket in self.deltas[self._since(first) :])

    def total(self, first: int, prefix: str) -> int:
        start = self._since(first)
        if not prefix:
            return sum(self.totals[start:])
        return sum(
            delta
            for bucket in self.deltas[start:]
            for name, delta in bucket.items()
            if name.startswith(prefix)
        )

    def changes(self, first: int, prefix: str) -> dict[str, int]:
        """name -> net change since minute `first`, for names under prefix that changed."""
        out: dict[str, int] = {}
        get = out.get
        for bucket in self.deltas[self._since(first) :]:
            for name, delta in bucket.items():
                if name.startswith(prefix):
                    out[name] = get(name, 0) + delta
        return out

    def entries(self) -> int:
        return sum(len(bucket) for bucket in self.deltas)


Space = tuple[str, str]  # (tenant, namespace)


class Windows:
    """Every shard's namespace windows on this node."""

    def __init__(self) -> None:
        self._shards: dict[int, dict[Space, NamespaceWindow]] = {}

    def add(
        self, shard: int, tenant: str, namespace: str, name: str, minute: int, delta: int
    ) -> None:
        spaces = self._shards.get(shard)
        if spaces is None:
            spaces = self._shards[shard] = {}
        window = spaces.get((tenant, namespace))
        if window is None:
            window = spaces[(tenant, namespace)] = NamespaceWindow()
        window.add(minute, name, delta)

    def get(self, shard: int, tenant: str, namespace: str) -> NamespaceWindow | None:
        spaces = self._shards.get(shard)
        return None if spaces is None else spaces.get((tenant, namespace))

    def spaces(self, shard: int) -> list[tuple[Space, NamespaceWindow]]:
        return list(self._shards.get(shard, {}).items())

    def window(self, shard: int, space: Space) -> NamespaceWindow:
        """The window of a (shard, tenant, namespace), made empty if it has none."""
        spaces = self._shards.setdefault(shard, {})
        window = spaces.get(space)
        if window is None:
            window = spaces[space] = NamespaceWindow()
        return window

    def forget(self, shard: int, space: Space) -> None:
        spaces = self._shards.get(shard)
        if spaces is not None:
            spaces.pop(space, None)
            if not spaces:
                del self._shards[shard]

    def drop_shard(self, shard: int) -> None:
        self._shards.pop(shard, None)

    def prune(self, now_ms: int) -> None:
        """Forget buckets no window can reach any more, and windows left empty."""
        oldest = first_minute(now_ms, MAX_SPAN_MIN)
        for shard, spaces in list(self._shards.items()):
            for space, window in list(spaces.items()):
                window.prune(oldest, now_ms)
                if not window.minutes:
                    del spaces[space]
            if not spaces:
                del self._shards[shard]

    def windows(self) -> Iterator[NamespaceWindow]:
        for spaces in self._shards.values():
            yield from spaces.values()

    def entries(self) -> int:
        """(counter, minute) entries held: what the memory statement counts."""
        return sum(window.entries() for window in self.windows())

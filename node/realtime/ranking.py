"""Rankings by windowed change: a namespace window's net changes over one span, kept in
order as changes arrive, so the top k by change is the first k, not a scan per query.

A ranking is made by the first top-by-change query of its (shard, tenant, namespace, span):
one pass over the window's buckets. From then on each change the tap hands on updates it
in O(log n), and a query first rolls it forward: the buckets that left the span since the
last query are subtracted (each (counter, minute) entry once per ranking). Rankings nobody
asked for in RANKING_IDLE_MS are dropped, and a namespace window keeps at most MAX_RANKINGS
(the most recently asked spans, windows.py), so the increment path pays only for a few
spans in use, and memory is ~150 bytes per counter with a nonzero change in a ranked span.

Only counters whose net change over the span is nonzero are ranked: a counter that went up
and back down within the window has no change to rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from sortedcontainers import SortedList

RANKING_IDLE_MS = 600_000  # a ranking unasked for ten minutes is dropped
MAX_RANKINGS = 8  # spans ranked per namespace window; a ninth replaces the least recently asked


class ChangeRanking:
    """Net change per name since minute `first`, and the names ranked by (-change, name)."""

    __slots__ = ("changes", "first", "ranked", "used_ms")

    def __init__(self, first: int, changes: dict[str, int], used_ms: int) -> None:
        self.first = first
        self.changes = {name: change for name, change in changes.items() if change}
        self.ranked = SortedList((-change, name) for name, change in self.changes.items())
        self.used_ms = used_ms

    def add(self, name: str, delta: int) -> None:
        if not delta:
            return
        changes = self.changes
        old = changes.get(name, 0)
        new = old + delta
        if old:
            self.ranked.remove((-old, name))
        if new:
            changes[name] = new
            self.ranked.add((-new, name))
        else:
            del changes[name]

    def ranked_under(self, prefix: str) -> Iterator[tuple[int, str]]:
        """(-change, name) under prefix, largest change first."""
        if not prefix:
            return iter(self.ranked)
        return (item for item in self.ranked if item[1].startswith(prefix))

    def top(self, prefix: str, k: int) -> list[tuple[str, int]]:
        return [
            (name, -negated) for negated, name in itertools.islice(self.ranked_under(prefix), k)
        ]

"""Per-shard value indexes: what aggregates and top-k by value read instead of a scan.

Always, per (shard, tenant, namespace): the running total of its values, updated by each
change (after - before), so an unfiltered aggregate is O(1) (the count is the store's).
Nothing per counter: a namespace nobody ranks costs the increment path one dict add.

While queries need it (a prefix aggregate, a top k by value), per (shard, tenant,
namespace) a NamespaceIndex, built from the store on the first such query (one pass, sorted
once: seconds at a million counters), kept as counters change, dropped after ten minutes
unasked. It keeps the values four ways, each updated in O(log n) per change:

- `values`: name -> value, and the running `total`;
- `names`, sorted: how many names start with a prefix is two bisections, and the names
  under a prefix are one contiguous run;
- `groups`: for every prefix that ends just after a delimiter (`:` or `/`, as in
  `video:42:`), its running count and total: an aggregate under such a prefix is O(1);
  under any other prefix it sums the run of names, O(names under it);
- `by_value`, sorted by (-value, name): the top k by value is its first k, and across shards
  a lazy merge of those (heapq.merge): O(k log shards), whatever the namespace's size.

Per counter that is a dict entry, two sorted-list entries (a tuple for by_value) and one
group update per delimiter in its name: ~150 bytes beside the store's record, for the
namespaces in use only.

Any other prefix a query asks for is learned, at most LEARNED per index, the oldest
forgotten first: its count and total, kept as counters change (an aggregate under it is
then O(1) per shard too), and, for a run of at most LEARNED_RUN names, the run sorted by
value (the top k under it), which a change of a name under it drops. A change touches one
shard: the other shards' learned sums and runs stay, so a query after it redoes only the
changed shard's part. At most LEARNED x LEARNED_RUN tuples per shard's index in use.

Counters loaded at start or arriving with a hand-off are not changes, nor is a shard the
store drops: `Realtime` resets such a shard from the store (totals, and indexes in use).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sortedcontainers import SortedList

DELIMITERS = frozenset(":/")
# Under this many names a prefix's top k sorts the run of names; above, it filters by_value.
SMALL_RUN = 4096
LEARNED = 8  # prefixes learned per index (count and total; runs sorted by value)
LEARNED_RUN = 128  # a run of names is learned when no longer than this (memory: see above)


def _groups_of(name: str) -> list[str]:
    """The delimited prefixes of name, shortest first."""
    if ":" not in name and "/" not in name:  # the common flat name: no loop in Python
        return []
    return [name[: i + 1] for i, char in enumerate(name) if char in DELIMITERS]


def _after_prefix(prefix: str) -> str | None:
    """The least string greater than every string starting with prefix (None: no bound)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


class NamespaceIndex:
    """One (shard, tenant, namespace)'s counters, indexed by name, prefix group and value."""

    __slots__ = ("by_value", "groups", "names", "runs", "sums", "total", "values")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.names: SortedList = SortedList()
        self.by_value: SortedList = SortedList()  # (-value, name)
        self.total = 0
        self.groups: dict[str, list[int]] = {}  # delimited prefix -> [count, total]
        self.sums: dict[str, list[int]] = {}  # learned prefix -> [count, total]
        self.runs: dict[str, list[tuple[int, str]]] = {}  # learned prefix -> (-value, name)

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, int]]) -> NamespaceIndex:
        """An index of (name, value) pairs in one go: sorted once, not inserted one by one."""
        index = cls()
        values = index.values = dict(pairs)
        index.names = SortedList(values)
        index.by_value = SortedList((-value, name) for name, value in values.items())
        index.total = sum(values.values())
        groups = index.groups
        for name, value in values.items():
            for group in _groups_of(name):
                found = groups.get(group)
                if found is None:
                    groups[group] = [1, value]
                else:
                    found[0] += 1
                    found[1] += value
        return index

    def set(self, name: str, value: int) -> None:
        old = self.values.get(name)
        if old == value:
            return
        self.values[name] = value
        groups = self.groups
        if old is None:
            self.names.add(name)
            for group in _groups_of(name):
                found = groups.get(group)
                if found is None:
                    groups[group] = [1, value]
                else:
                    found[0] += 1
                    found[1] += value
            self.total += value
        else:
            self.by_value.remove((-old, name))
            grown = value - old
            if groups:
                for group in _groups_of(name):
                    groups[group][1] += grown
            self.total += grown
        self.by_value.add((-value, name))
        if self.sums:
            for prefix, found in self.sums.items():
                if name.startswith(prefix):
                    if old is None:
                        found[0] += 1
                        found[1] += value
                    else:
                        found[1] += value - old
        if self.runs:
            for prefix in [p for p in self.runs if name.startswith(p)]:
                del self.runs[prefix]

    def _run(self, prefix: str) -> tuple[int, int]:
        """[start, stop) positions in `names` of the names under prefix."""
        names = self.names
        start = names.bisect_left(prefix)
        upper = _after_prefix(prefix)
        return start, (len(names) if upper is None else names.bisect_left(upper))

    def aggregate(self, prefix: str) -> tuple[int, int]:
        """(counters, sum of their values) under prefix."""
        if not prefix:
            return len(self.values), self.total
        group = self.groups.get(prefix)
        if group is not None:
            return group[0], group[1]
        if prefix[-1] in DELIMITERS:  # a delimited prefix no name has
            return 0, 0
        found = self.sums.get(prefix)
        if found is None:
            start, stop = self._run(prefix)
            values = self.values
            total = sum(values[name] for name in self.names.islice(start, stop))
            found = _learn(self.sums, prefix, [stop - start, total])
        return found[0], found[1]

    def learn(self, prefix: str) -> bool:
        """Learn the aggregate under prefix now, as `aggregate` would; whether that took a
        pass over its names (Realtime.prepare yields to the loop after each such shard, so a
        tenant cycling through more prefixes than LEARNED holds the loop a shard at a time)."""
        known = not prefix or prefix in self.groups or prefix in self.sums
        if known or prefix[-1] in DELIMITERS:
            return False
        self.aggregate(prefix)
        return True

    def ranked(self, prefix: str) -> Iterator[tuple[int, str]]:
        """(-value, name) under prefix, largest value first (ties by name)."""
        if not prefix:
            return iter(self.by_value)
        run = self.runs.get(prefix)
        if run is not None:
            return iter(run)
        start, stop = self._run(prefix)
        if stop - start <= SMALL_RUN:
            values = self.values
            run = sorted((-values[n], n) for n in self.names.islice(start, stop))
            if len(run) <= LEARNED_RUN:
                _learn(self.runs, prefix, run)
            return iter(run)
        return (item for item in self.by_value if item[1].startswith(prefix))


def _learn(learned: dict[str, Any], prefix: str, found: Any) -> Any:
    """Keep what was found under prefix, forgetting the oldest beyond LEARNED."""
    while len(learned) >= LEARNED:
        del learned[next(iter(learned))]
    learned[prefix] = found
    return found


def top_by_value(
    indexes: Sequence[NamespaceIndex], prefix: str, k: int
) -> list[tuple[str, int, int]]:
    """The k largest (name, value, position of its index in `indexes`) under prefix, largest
    first, ties by name: exact, as a counter lives in one index."""
    ranked = [_tagged(index.ranked(prefix), position) for position, index in enumerate(indexes)]
    merged = heapq.merge(*ranked)
    return [(name, -negated, position) for negated, name, position in itertools.islice(merged, k)]


def _tagged(ranked: Iterator[tuple[int, str]], position: int) -> Iterator[tuple[int, str, int]]:
    for negated, name in ranked:
        yield negated, name, position


Space = tuple[str, str]
INDEX_IDLE_MS = 600_000  # a namespace index unasked for ten minutes is dropped


class ValueIndex:
    """Per (shard, tenant, namespace): the running total of its values, always; and, while
    queries need it, its NamespaceIndex (built from the store on first need, kept as
    counters change, dropped after INDEX_IDLE_MS unasked)."""

    def __init__(self) -> None:
        self._totals: dict[int, dict[Space, int]] = {}
        self._indexes: dict[int, dict[Space, NamespaceIndex]] = {}
        self._used: dict[tuple[int, Space], int] = {}  # when each index was last asked for

    def change(
        self, shard: int, tenant: str, namespace: str, name: str, before: int, after: int
    ) -> None:
        space = (tenant, namespace)
        totals = self._totals.get(shard)
        if totals is None:
            totals = self._totals[shard] = {}
        totals[space] = totals.get(space, 0) + after - before
        indexes = self._indexes.get(shard)
        if indexes:
            index = indexes.get(space)
            if index is not None:
                index.set(name, after)

    def has(self, shard: int, space: Space) -> bool:
        return space in self._indexes.get(shard, {})

    def total(self, shard: int, tenant: str, namespace: str) -> int:
        return self._totals.get(shard, {}).get((tenant, namespace), 0)

    def index(
        self,
        shard: int,
        space: Space,
        values: Callable[[], Iterable[tuple[str, int]]],
        now_ms: int,
    ) -> NamespaceIndex:
        """The namespace's index, built from `values` (the store's) if it has none."""
        indexes = self._indexes.setdefault(shard, {})
        index = indexes.get(space)
        if index is None:
            index = indexes[space] = NamespaceIndex.build(values())
        self._used[(shard, space)] = now_ms
        return index

    def reset(
        self,
        shard: int,
        totals: dict[Space, int],
        values: Callable[[Space], Iterable[tuple[str, int]]],
    ) -> None:
        """The shard afresh: its totals, and its indexes in use rebuilt from `values`."""
        if totals:
            self._totals[shard] = totals
        else:
            self._totals.pop(shard, None)
        indexes = self._indexes.get(shard)
        if indexes:
            for space in list(indexes):
                indexes[space] = NamespaceIndex.build(values(space))

    def forget_idle(self, now_ms: int) -> None:
        for (shard, space), used in list(self._used.items()):
            if now_ms - used > INDEX_IDLE_MS:
                del self._used[(shard, space)]
                indexes = self._indexes.get(shard, {})
                indexes.pop(space, None)
                if not indexes:
                    self._indexes.pop(shard, None)

    def indexed(self) -> int:
        """Counters held in indexes in use (each ~150 bytes)."""
        return sum(len(index) for spaces in self._indexes.values() for index in spaces.values())

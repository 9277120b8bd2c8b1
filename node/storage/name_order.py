"""Each shard's names of a namespace in sorted order, so that a listing page costs
O(shards x log(names) + limit) instead of a pass over every name of the namespace (412 ms of
the event loop per page at a million names, for every page: loadtest/bench_listing.py).

Built for a (tenant, namespace) on its first page (one sort per shard: about as long as the
pass it replaces), then kept as names arrive: the store never removes a name from a
namespace's dict but drops whole shards (a new dict when the shard comes back), and a dict
keeps insertion order, so the names added since the last page are the dict's last ones, each
put in place by bisection. A list is rebuilt when its dict is another object or more than
a quarter of its names are new. Bounded: at most MAX_NAMES names held over all the
namespaces kept (8 bytes each: the names themselves are the store's strings), the least
recently listed dropped first, and a namespace unlisted for IDLE_S is dropped.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Iterator
from itertools import islice

MAX_NAMES = 4_000_000
IDLE_S = 600.0

Names = dict[str, bytes]  # the store's name -> record, for one (shard, tenant, namespace)


class _Sorted:
    __slots__ = ("names", "order")

    def __init__(self, names: Names) -> None:
        self.names = names  # the dict it orders (held: identity says it is still the same)
        self.order = sorted(names)

    def catch_up(self, names: Names) -> int:
        """Bring the order up to `names`; returns how many names it holds more than before."""
        held = len(self.order)
        added = len(names) - held
        if names is not self.names or added < 0 or added * 4 > held:
            self.names, self.order = names, sorted(names)
        elif added:
            order = self.order
            for name in islice(reversed(names), added):  # the newest: insertion order
                insort(order, name)
        return len(self.order) - held


def _run(order: list[str], prefix: str, after: str, shard: int) -> Iterator[tuple[str, int]]:
    """(name, shard) for the names of `order` after `after` that start with `prefix`, in
    order, lazily."""
    start = bisect_right(order, after) if after >= prefix else bisect_left(order, prefix)
    for i in range(start, len(order)):
        name = order[i]
        if not name.startswith(prefix):
            return
        yield name, shard


class NameOrder:
    def __init__(self, max_names: int = MAX_NAMES, idle_s: float = IDLE_S) -> None:
        self.max_names = max_names
        self.idle_s = idle_s
        # (tenant, namespace) -> (last listed, monotonic s; shard -> its sorted names)
        self._spaces: OrderedDict[tuple[str, str], tuple[float, dict[int, _Sorted]]] = OrderedDict()
        self.held = 0  # names held over every space

    def page(
        self,
        tenant: str,
        namespace: str,
        shards: dict[int, Names],
        prefix: str,
        after: str,
        limit: int,
    ) -> list[tuple[str, int]]:
        """(name, its shard) for the first `limit` names after `after` starting with
        `prefix`, across `shards` (each shard's names dict of the namespace)."""
        now = time.monotonic()
        self._forget_idle(now)
        space = (tenant, namespace)
        found = self._spaces.pop(space, None)
        kept = {} if found is None else found[1]
        for shard in [s for s in kept if s not in shards]:
            self.held -= len(kept.pop(shard).order)
        for shard, names in shards.items():
            order = kept.get(shard)
            if order is None:
                order = kept[shard] = _Sorted(names)
                self.held += len(order.order)
            else:
                self.held += order.catch_up(names)
        self._spaces[space] = (now, kept)
        runs = [_run(order.order, prefix, after, shard) for shard, order in kept.items()]
        page = list(islice(heapq.merge(*runs), limit))
        while self.held > self.max_names and len(self._spaces) > 1:
            self._drop(next(iter(self._spaces)))  # the least recently listed
        return page

    def _forget_idle(self, now: float) -> None:
        spaces = self._spaces
        while spaces:
            space, (listed, _) = next(iter(spaces.items()))
            if now - listed < self.idle_s:
                return
            self._drop(space)

    def _drop(self, space: tuple[str, str]) -> None:
        _, kept = self._spaces.pop(space)
        self.held -= sum(len(order.order) for order in kept.values())

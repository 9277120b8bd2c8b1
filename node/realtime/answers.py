"""Answers kept for repeated queries: a dashboard polling the same top k or aggregate, or
many clients asking it at once, costs one computation until something it read changes.

A node's answer to an AGGREGATE or TOP query is a function of the values and windows of the
shards it answers for, of the minute its window begins, and of which shards it answers
for. So an answer is kept under the query itself (its `at_ms` replaced by that minute), and
served again only while none of these moved:

- the generation of its (tenant, namespace), which every tap turn that changed one of its
  counters moves on (`changed`);
- nothing else that alters what an answer reads: a shard re-read from the store, older
  buckets adopted, a shard observed or no longer observed each drop every kept answer
  (`clear`);
- the number of counters the store holds (a counter created at 0 is no change, yet counted).

A kept answer is therefore the one the query would compute now: answers stay exactly as
fresh as the indexes they come from (one tap turn, 0.1 s). Each is also served for at most
MAX_AGE_MS, so the indexes and rankings it was read from see their use and are not dropped
as idle. WINDOW reads (one counter, cheap) and BUCKETS are never kept. At most MAX_ENTRIES
answers are kept (the oldest go first): a few hundred KB at k = 1,000.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from node.realtime.query import Answer, Kind, Query
from node.realtime.windows import first_minute

MAX_AGE_MS = 2_000
MAX_ENTRIES = 256
KEPT = (Kind.AGGREGATE, Kind.TOP)

Space = tuple[str, str]


@dataclass(frozen=True)
class _Kept:
    answer: Answer
    generation: int
    counters: int  # the store's count when computed
    at_ms: int  # when computed, by the node's clock


class AnswerCache:
    def __init__(self) -> None:
        self._kept: dict[Query, _Kept] = {}
        self._generations: dict[Space, int] = {}

    def __len__(self) -> int:
        return len(self._kept)

    @staticmethod
    def _key(query: Query) -> Query | None:
        if query.kind not in KEPT:
            return None
        minute = first_minute(query.at_ms, query.span_min) if query.span_min else 0
        return replace(query, at_ms=minute)

    def get(self, query: Query, counters: int, now_ms: int) -> Answer | None:
        """The answer kept for this query, if nothing it read has moved since."""
        key = self._key(query)
        if key is None:
            return None
        kept = self._kept.get(key)
        if (
            kept is None
            or kept.generation != self._generations.get((query.tenant, query.namespace), 0)
            or kept.counters != counters
            or not 0 <= now_ms - kept.at_ms < MAX_AGE_MS
        ):
            return None
        return kept.answer

    def put(self, query: Query, answer: Answer, counters: int, now_ms: int) -> None:
        key = self._key(query)
        if key is None:
            return
        kept = self._kept
        kept.pop(key, None)
        while len(kept) >= MAX_ENTRIES:
            del kept[next(iter(kept))]
        generation = self._generations.get((query.tenant, query.namespace), 0)
        kept[key] = _Kept(answer, generation, counters, now_ms)

    def changed(self, spaces: set[Space]) -> None:
        """Counters of these (tenant, namespace)s changed: their answers are stale."""
        generations = self._generations
        for space in spaces:
            generations[space] = generations.get(space, 0) + 1

    def clear(self) -> None:
        """Something besides a change moved (a shard re-read, adopted, observed or not)."""
        self._kept.clear()

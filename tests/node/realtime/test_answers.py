"""Kept answers (node/realtime/answers.py): after any sequence of changes, counters created
at zero, loads, drops, clock steps and queries, a Realtime that keeps answers answers every
query exactly as one that computes each afresh; and a repeated query is served kept until
something it reads moves."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crdt import PNCounter
from node.realtime.answers import MAX_AGE_MS, AnswerCache
from node.realtime.changes import ChangeTap
from node.realtime.query import Answer, By, Kind, Query
from node.realtime.service import Realtime
from node.realtime.windows import MINUTE_MS
from node.storage.store import CounterStore

SHARDS = 4
T0 = 1_000 * MINUTE_MS
NAMES = ["a:1", "a:2", "a:3", "b:1", "b:4", "ab:5", "a:b:6"]


def shard_of(key: tuple[str, str, str]) -> int:
    return int(key[2].rsplit(":", 1)[-1]) % SHARDS


class NeverKept(AnswerCache):
    """The model: every query computed afresh."""

    def get(self, query: Query, counters: int, now_ms: int) -> Answer | None:
        return None


class Node:
    """One store and its tap feeding two Realtimes: one keeping answers, one not."""

    def __init__(self) -> None:
        self.ms = T0
        self.store = CounterStore(shard_of, track_changes=True)
        self.kept = self._realtime()
        self.fresh = self._realtime()
        self.fresh.answers = NeverKept()
        self.tap = ChangeTap(self.store, shard_of, [self.kept, self.fresh], clock_ms=self.clock)

    def clock(self) -> int:
        return self.ms

    def _realtime(self) -> Realtime:
        return Realtime(self.store, SHARDS, lambda s: True, lambda: True, clock_ms=self.clock)

    def query(self, **fields: Any) -> Query:
        fields.setdefault("kind", Kind.TOP)
        return Query(tenant="t", namespace="ns", at_ms=self.ms, shards=(0, 1, 2, 3), **fields)

    def both(self, query: Query) -> tuple[Answer, Answer]:
        return self.kept.answer(query), self.fresh.answer(query)


names = st.sampled_from(NAMES)
queries = st.builds(
    dict,
    kind=st.sampled_from([Kind.AGGREGATE, Kind.TOP]),
    by=st.sampled_from(list(By)),
    prefix=st.sampled_from(["", "a:", "a", "b:", "a:b:"]),
    k=st.integers(1, 4),
    span_min=st.sampled_from([0, 1, 5]),
    strict=st.booleans(),
)
add = st.tuples(st.just("add"), st.sampled_from(["t", "u"]), names, st.integers(-5, 9))
turn = st.tuples(st.just("turn"))
ask = st.tuples(st.just("ask"), queries)
others = st.one_of(
    st.tuples(st.just("zero"), names),  # made and back to 0 in one turn: no change
    st.tuples(st.just("tick"), st.integers(0, 3 * MINUTE_MS)),
    st.tuples(st.just("load"), names, st.integers(0, 50)),
    st.tuples(st.just("drop"), st.integers(0, SHARDS - 1)),
)
# Runs of changes, turns and queries (what a kept answer must notice), between the others.
runs = st.lists(st.one_of(add, turn, ask), min_size=1, max_size=6)
steps = st.lists(st.one_of(runs, others.map(lambda step: [step])), max_size=12).map(
    lambda parts: [step for part in parts for step in part]
)
AGGREGATE = {"kind": Kind.AGGREGATE, "by": By.VALUE, "prefix": "", "k": 1, "span_min": 0}
TOP_CHANGE = {"kind": Kind.TOP, "by": By.CHANGE, "prefix": "", "k": 1, "span_min": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
@example(  # found by the search: a top by change read a value newer than its change
    [
        ("ask", AGGREGATE),
        ("add", "t", "a:2", 1),
        ("turn",),
        ("ask", TOP_CHANGE),
        ("add", "t", "a:2", 1),
        ("ask", TOP_CHANGE),
    ]
)
@example(
    [
        ("add", "t", "a:1", 3),
        ("ask", AGGREGATE),
        ("add", "t", "a:1", 2),
        ("turn",),
        ("ask", AGGREGATE),
    ]
)
def test_kept_answers_equal_fresh_ones(plan: list[tuple[Any, ...]]) -> None:
    node = Node()
    store = node.store
    for step in plan:
        if step[0] == "add":
            store.increment_slot((step[1], "ns", step[2]), "a:1", step[3])
        elif step[0] == "zero":
            store.increment_slot(("t", "ns", step[1]), "z:1", 1)
            store.increment_slot(("t", "ns", step[1]), "z:1", -1)
        elif step[0] == "turn":
            asyncio.run(node.tap.turn())
        elif step[0] == "tick":
            node.ms += step[1]
        elif step[0] == "load":  # a hand-off's arrival: not a change
            store.load_durable([(("t", "ns", step[1]), PNCounter.from_slot("b:1", step[2], 0))])
        elif step[0] == "drop":
            store.drop_shard(step[1])
        else:
            query = node.query(**step[1])
            for _ in range(2):  # the second is served kept when nothing moved
                kept, fresh = node.both(query)
                assert kept == fresh


def test_a_repeated_query_is_kept_until_what_it_read_moves() -> None:
    node = Node()
    store, realtime = node.store, node.kept
    for i, name in enumerate(NAMES):
        store.increment_slot(("t", "ns", name), "a:1", i + 1)
    store.increment_slot(("u", "ns", "a:1"), "a:1", 1)
    asyncio.run(node.tap.turn())
    by_change = node.query(by=By.CHANGE, span_min=5, k=3)
    first = realtime.answer(by_change)
    assert realtime.answer(by_change) is first  # nothing moved: the same answer
    assert realtime.kept_answers == 1

    store.increment_slot(("u", "ns", "a:1"), "a:1", 100)  # another tenant's namespace
    asyncio.run(node.tap.turn())
    assert realtime.answer(by_change) is first

    store.increment_slot(("t", "ns", "a:1"), "a:1", 100)  # this one: computed afresh
    asyncio.run(node.tap.turn())
    again = realtime.answer(by_change)
    assert again is not first and again.top[0] == ("a:1", 101, 101)

    node.ms += MINUTE_MS  # a window beginning a minute later reads other buckets
    assert realtime.answer(by_change) is not again

    aggregate = node.query(kind=Kind.AGGREGATE)
    counted = realtime.answer(aggregate)
    store.increment_slot(("t", "ns", "c:7"), "z:1", 1)  # a counter made, still at 0
    store.increment_slot(("t", "ns", "c:7"), "z:1", -1)
    asyncio.run(node.tap.turn())
    assert realtime.answer(aggregate).counters == counted.counters + 1

    counted = realtime.answer(aggregate)
    node.ms += MAX_AGE_MS  # at most MAX_AGE_MS: the indexes read see their use
    assert realtime.answer(aggregate) is not counted

"""The change tap (node/realtime/changes.py) over a real CounterStore: every path that changes
a counter's value is seen once per turn as its net change; loads and hand-off arrivals are
not changes; and a model of the values (the sum of the changes handed on) always equals the
store, whatever the mix of increments, merges, resets and turns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from crdt import PNCounter
from node.base.keys import Key
from node.realtime.changes import Change, ChangeTap
from node.storage.store import CounterStore

X: Key = ("t", "ns", "x")
Y: Key = ("t", "ns", "y")
KEYS = [X, Y, ("u", "ns", "x")]


def shard_of(key: Key) -> int:
    return len(key[2]) % 4


class Seen:
    def __init__(self) -> None:
        self.turns: list[tuple[list[Change], int]] = []

    def on_changes(self, changes: Sequence[Change], at_ms: int) -> None:
        self.turns.append((list(changes), at_ms))


def tap_of(store: CounterStore) -> tuple[ChangeTap, Seen]:
    seen = Seen()
    return ChangeTap(store, shard_of, [seen], clock_ms=lambda: 42), seen


def test_changes_within_a_turn_arrive_as_one_net_change() -> None:
    store = CounterStore(shard_of, track_changes=True)
    tap, seen = tap_of(store)
    store.increment_slot(X, "a:1", 5)
    store.increment_slot(X, "a:1", 2)
    store.merge_slot(X, "b:1", 0, 3)
    store.increment_slot(Y, "a:1", 1)
    store.increment_slot(Y, "a:1", -1)  # back at 0, but new here: named, with no change
    asyncio.run(tap.turn())
    assert seen.turns == [([Change(X, shard_of(X), 0, 4), Change(Y, shard_of(Y), 0, 0)], 42)]
    store.merge(X, PNCounter.from_slot("c:1", 10, 0))
    store.reset(Y)  # at 0 and not new: no change
    asyncio.run(tap.turn())
    assert seen.turns[1] == ([Change(X, shard_of(X), 4, 14)], 42)
    asyncio.run(tap.turn())  # nothing changed: nothing handed on
    assert len(seen.turns) == 2 and tap.changes == 3


def test_a_reset_is_a_negative_change() -> None:
    store = CounterStore(shard_of, track_changes=True)
    tap, seen = tap_of(store)
    store.increment_slot(X, "a:1", 7)
    asyncio.run(tap.turn())
    store.reset(X)
    asyncio.run(tap.turn())
    assert seen.turns[-1][0] == [Change(X, shard_of(X), 7, 0)]


def test_loads_and_hand_off_arrivals_are_not_changes() -> None:
    store = CounterStore(shard_of, track_changes=True)
    tap, seen = tap_of(store)
    store.load_durable([(X, PNCounter.from_slot("a:1", 9, 0))])
    store.merge_carried([(Y, PNCounter.from_slot("a:1", 4, 0), {})])
    assert store.take_changes() == []
    # a hand-off that brings more of a counter already held is a change (seen late)
    store.merge_carried([(X, PNCounter.from_slot("b:1", 2, 0), {})])
    asyncio.run(tap.turn())
    assert seen.turns == [([Change(X, shard_of(X), 9, 11)], 42)]


def test_a_store_without_the_tap_keeps_no_marks() -> None:
    store = CounterStore(shard_of)
    store.increment_slot(X, "a:1", 5)
    assert store.take_changes() == []


def test_a_dropped_shard_is_not_a_change() -> None:
    store = CounterStore(shard_of, track_changes=True)
    tap, seen = tap_of(store)
    store.increment_slot(X, "a:1", 5)
    store.drop_shard(shard_of(X))
    asyncio.run(tap.turn())
    assert seen.turns == []


steps = st.lists(
    st.one_of(
        st.tuples(st.just("incr"), st.sampled_from(KEYS), st.integers(-50, 50)),
        st.tuples(st.just("merge"), st.sampled_from(KEYS), st.integers(0, 60), st.integers(0, 60)),
        st.tuples(st.just("reset"), st.sampled_from(KEYS)),
        st.tuples(
            st.just("turn"),
        ),
    ),
    max_size=40,
)


@given(steps)
def test_the_sum_of_handed_on_changes_is_the_value(plan: list[tuple]) -> None:
    store = CounterStore(shard_of, track_changes=True)
    tap, seen = tap_of(store)
    for step in plan:
        if step[0] == "incr":
            store.increment_slot(step[1], "a:1", step[2])
        elif step[0] == "merge":
            store.merge_slot(step[1], "b:1", step[2], step[3])
        elif step[0] == "reset":
            store.reset(step[1])
        else:
            asyncio.run(tap.turn())
    asyncio.run(tap.turn())
    model: dict[Key, int] = {}
    for changes, _ in seen.turns:
        keys = [change.key for change in changes]
        assert len(keys) == len(set(keys))  # one change per counter per turn
        for change in changes:
            assert change.before == model.get(change.key, 0)
            model[change.key] = change.after
    for key in KEYS:
        assert model.get(key, 0) == (store.value(key) or 0)

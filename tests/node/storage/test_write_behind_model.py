"""The write-behind's marks against a model: every slot this node writes reaches the durable
replica, whatever mix of increments, replica merges, loads, resets, shard drops and failed
or in-flight flushes came first (the marks are kept by shard, as tuples, sets or "all")."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter
from node.base.keys import Key
from node.storage.store import CounterStore

KEYS: list[Key] = [("t", "ns", "x"), ("t", "ns", "y"), ("t", "ns", "zz"), ("u", "ns", "zz")]
ACTORS = ["a:1", "a:2", "b:1", "c:1"]


def shard_of(key: Key) -> int:
    return len(key[2]) % 2


def writes(shard: int, actor: str) -> bool:
    """The slot rule: this node writes every slot but c:1's outside shard 0."""
    return actor != "c:1" or shard == 0


keys, actors, counts = st.sampled_from(KEYS), st.sampled_from(ACTORS), st.integers(0, 40)
STEPS = st.one_of(
    st.tuples(st.just("increment"), keys, actors, st.integers(-9, 9), st.booleans()),
    st.tuples(st.just("merge_slot"), keys, actors, counts, counts, st.booleans()),
    st.tuples(st.just("merge"), keys, actors, counts, counts),
    st.tuples(st.just("merge_share"), keys, actors, counts, counts),
    st.tuples(st.just("load"), keys, actors, counts),
    st.tuples(st.just("reset"), keys),
    st.tuples(st.just("mark_shard"), st.sampled_from([0, 1])),
    st.tuples(st.just("take"), st.booleans()),
    st.tuples(
        st.just("written"),
    ),
    st.tuples(
        st.just("failed"),
    ),
    st.tuples(st.just("drop"), st.sampled_from([0, 1])),
)


def _apply(store: CounterStore, step: tuple[Any, ...], durable: dict[Key, PNCounter]) -> None:
    kind, *args = step
    if kind == "increment":
        key, actor, delta, with_shard = args
        store.increment_slot(key, actor, delta, shard_of(key) if with_shard else -1)
    elif kind == "merge_slot":
        key, actor, p, n, with_shard = args
        store.merge_slot(key, actor, p, n, shard_of(key) if with_shard else -1)
    elif kind == "merge":
        key, actor, p, n = args
        store.merge(key, PNCounter.from_slot(actor, p, n).merge(PNCounter.from_slot("b:1", p, 0)))
    elif kind == "merge_share":
        key, actor, p, n = args
        store.merge_share(key, PNCounter.from_slot(actor, p, n))
    elif kind == "load":
        key, actor, p = args
        loaded = PNCounter.from_slot(actor, p, 0)
        store.load_durable([(key, loaded)])
        durable[key] = durable.get(key, PNCounter.empty()).merge(loaded)
    elif kind == "reset":
        store.reset(args[0])
    elif kind == "mark_shard":
        store.mark_shard_slots_dirty(args[0], writes)
    elif kind == "drop":
        store.drop_shard(args[0])


@settings(max_examples=600, deadline=None)
@given(st.lists(STEPS, max_size=60))
def test_every_slot_this_node_writes_reaches_the_durable_replica(steps: list[Any]) -> None:
    store = CounterStore(shard_of)
    durable: dict[Key, PNCounter] = {}
    in_flight: list[tuple[Key, int, PNCounter]] | None = None
    for step in steps:
        kind = step[0]
        try:
            if kind == "take" and in_flight is None:
                in_flight = store.take_dirty(writes if step[1] else None)
            elif kind == "written" and in_flight is not None:
                for key, _, state in in_flight:
                    durable[key] = durable.get(key, PNCounter.empty()).merge(state)
                in_flight = None
            elif kind == "failed" and in_flight is not None:
                store.mark_dirty(in_flight)  # put back, as the persister does
                in_flight = None
            else:
                _apply(store, step, durable)
        except CounterOverflowError:
            pass  # refused, nothing changed
    if in_flight is not None:
        store.mark_dirty(in_flight)
    for key, _, state in store.take_dirty(writes):
        durable[key] = durable.get(key, PNCounter.empty()).merge(state)
    for key in KEYS:
        held = store.get(key)
        if held is None:
            continue
        written = durable.get(key, PNCounter.empty())
        for actor in held.actors():
            if writes(shard_of(key), actor):
                p, n = written.slot(actor)
                assert p >= held.slot(actor)[0] and n >= held.slot(actor)[1], (key, actor)

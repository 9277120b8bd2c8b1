"""CounterStore keeps packed records: whatever the calls, it answers as a map of PNCounters
would, and its shares and digests are those of the object form (nodes of either version
compare digests with each other)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter
from crdt.gcounter import UINT64_MAX
from crdt.pncounter import with_covered
from node.base.keys import Key
from node.storage.store import MASK64, CounterStore
from ring import hash64

KEYS: list[Key] = [("t", "ns", "a"), ("t", "ns", "bb"), ("t", "other", "a"), ("u", "ns", "c")]
ACTORS = ["n1:1", "n2:1", "n3:4", "n1:1#floor"]


def _shard(key: Key) -> int:
    return len(key[2]) % 2


def reference_share(key: Key, state: PNCounter) -> int:
    """The share as the object store computed it before the store was packed."""
    weight = hash64("/".join(key).encode()) | 1
    total = 0
    for actor, count in state.p.slots.items():
        total += count * (hash64(b"p" + actor.encode()) | 1)
    for actor, count in state.n.slots.items():
        total += count * (hash64(b"n" + actor.encode()) | 1)
    return (total * weight) & MASK64


counts = st.one_of(st.integers(0, 50), st.integers(0, UINT64_MAX))
ops = st.one_of(
    st.tuples(st.just("increment"), st.sampled_from(KEYS), st.sampled_from(ACTORS),
              st.integers(-(2**63), 2**63 - 1) | st.integers(-5, 5)),
    st.tuples(st.just("increment_slot"), st.sampled_from(KEYS), st.sampled_from(ACTORS),
              st.integers(-5, 5), st.booleans()),  # True: the caller gives the key's shard
    st.tuples(st.just("merge"), st.sampled_from(KEYS), st.sampled_from(ACTORS), counts, counts),
    st.tuples(st.just("merge_slot"), st.sampled_from(KEYS), st.sampled_from(ACTORS), counts,
              counts, st.booleans()),  # True: the caller gives the key's shard
    st.tuples(st.just("merge_share"), st.sampled_from(KEYS), st.sampled_from(ACTORS), counts,
              counts, st.sampled_from([None, *ACTORS]), counts),
    st.tuples(st.just("reset"), st.sampled_from(KEYS)),
    st.tuples(st.just("drop"), st.sampled_from([0, 1])),
)  # fmt: skip


def apply(store: CounterStore, model: dict[Key, PNCounter], op: tuple) -> None:  # type: ignore[type-arg]
    kind, *args = op
    if kind == "drop":
        store.drop_shard(args[0])
        for key in [key for key in model if _shard(key) == args[0]]:
            del model[key]
        return
    key = args[0]
    old = model.get(key, PNCounter.empty())
    if kind in ("increment", "increment_slot"):
        actor, delta = args[1], args[2]
        try:
            expected = old.increment(actor, delta)
        except CounterOverflowError as error:
            with pytest.raises(type(error)):
                getattr(store, kind)(key, actor, delta)
            return
        if kind == "increment":
            state, changed = store.increment(key, actor, delta)
            assert state == expected and changed == expected.delta_since(old)
        else:
            given_shard = _shard(key) if args[3] else -1
            assert store.increment_slot(key, actor, delta, given_shard) == expected.slot(actor)
        model[key] = expected
    elif kind == "merge":
        incoming = PNCounter.from_slot(args[1], args[2], args[3])
        expected = old.merge(incoming)
        assert store.merge(key, incoming) == expected
        if key in model or not incoming.is_empty():
            model[key] = expected
    elif kind == "merge_slot":
        incoming = PNCounter.from_slot(args[1], args[2], args[3])
        expected = old.merge(incoming)
        given_shard = _shard(key) if args[4] else -1
        share = store.merge_slot(key, args[1], args[2], args[3], given_shard)
        assert share == reference_share(key, expected)
        if key in model or not incoming.is_empty():
            model[key] = expected
    elif kind == "merge_share":  # one actor's slot (a keyed write's), or two actors'
        actor, p, n, other, count = args[1:]
        incoming = PNCounter.from_slot(actor, p, n)
        if other is not None:
            incoming = incoming.merge(PNCounter.from_slot(other, count, 0))
        expected = old.merge(incoming)
        assert store.merge_share(key, incoming) == reference_share(key, expected)
        if key in model or not incoming.is_empty():
            model[key] = expected
    elif kind == "reset":
        state, changed = store.reset(key)
        if key in model:
            model[key] = old.reset()
            # the floors that changed, with the slots they cover (a replica given a floor
            # without its slot would read the counter below zero)
            covered = with_covered(model[key].delta_since(old).actors())
            assert state == model[key] and changed == model[key].restricted_to(covered)


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, max_size=30))
def test_the_store_answers_as_a_map_of_pncounters(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    store = CounterStore(_shard)
    model: dict[Key, PNCounter] = {}
    for op in steps:
        apply(store, model, op)
    assert len(store) == len(model)
    for key in KEYS:
        state = model.get(key)
        assert store.get(key) == state
        assert store.value(key) == (None if state is None else state.value())
        assert store.value(key, _shard(key)) == store.value(key)
        assert (
            store.has(key) == store.has(key, _shard(key)) == (state is not None) == (key in store)
        )
        assert store.share(key) == (0 if state is None else reference_share(key, state))
    for shard in (0, 1):
        held = {key: state for key, state in model.items() if _shard(key) == shard}
        assert dict(store.shard_entries(shard)) == held
        expected = sum(reference_share(key, state) for key, state in held.items()) & MASK64
        assert store.digest(shard) == expected
        assert sorted(store.shard_shares(shard)) == sorted(
            (key, hash64("/".join(key).encode()) | 1, reference_share(key, state))
            for key, state in held.items()
        )
    dirty = {key for key, _, _ in store.take_dirty()}
    assert dirty <= set(model)


def test_merge_slot_refuses_what_is_not_a_uint64_and_changes_nothing():
    store = CounterStore(_shard)
    for bad in (-1, UINT64_MAX + 1, True):
        with pytest.raises(CounterOverflowError):
            store.merge_slot(KEYS[0], "n1:1", bad, 0)
    assert store.get(KEYS[0]) is None and len(store) == 0 and store.dirty_count() == 0


def test_a_refused_increment_leaves_no_trace_of_its_actor():
    store = CounterStore(_shard)
    store.increment(KEYS[0], "n1:1", 2**63 - 1)
    with pytest.raises(CounterOverflowError):
        store.increment(KEYS[0], "n9:7", 1)
    assert store.incarnations() == {"n1": 1}


def test_a_zero_increment_holds_a_new_counter_empty():
    store = CounterStore(_shard)
    assert store.increment(KEYS[0], "n1:1", 0) == (PNCounter.empty(), PNCounter.empty())
    assert store.get(KEYS[0]) == PNCounter.empty() and len(store) == 1
    assert store.tenant_counts(_shard(KEYS[0])) == {"t": 1}


def test_load_durable_holds_states_without_marking_them_dirty():
    store = CounterStore(_shard)
    state = PNCounter.from_slot("n2:1", 5, 1)
    store.increment(KEYS[1], "n1:1", 1)
    store.take_dirty()
    store.load_durable([(KEYS[0], state), (KEYS[1], state)])
    assert store.get(KEYS[0]) == state
    assert store.get(KEYS[1]) == state.merge(PNCounter.from_slot("n1:1", 1, 0))
    assert {key for key, _, _ in store.take_dirty()} == {KEYS[1]}


def test_contains_tells_a_held_counter_without_its_state():
    store = CounterStore(_shard)
    assert KEYS[0] not in store
    store.increment(KEYS[0], "n1:1", 0)
    assert KEYS[0] in store and KEYS[1] not in store
    store.drop_shard(_shard(KEYS[0]))
    assert KEYS[0] not in store

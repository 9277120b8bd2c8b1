"""CounterStore.load_slots and load_named, the bulk load of a start: the store they leave
answers exactly as one that merged the same states one by one would (values, shares,
digests, tenant counts), and holds them clean; a counter already held is merged and
written back as usual."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter, SlotFullError
from crdt.gcounter import UINT64_MAX
from node.base.keys import Key
from node.storage.durable import NamedRow, NamedSlots, SlotRow, states_of
from node.storage.store import CounterStore

KEYS: list[Key] = [("t", "ns", "a"), ("t", "ns", "bb"), ("t", "other", "a"), ("u", "ns", "c")]
ACTORS = ["n1:1", "n2:1", "n3:4", "n1:1#floor"]


def _shard(key: Key) -> int:
    return len(key[2]) % 2


def _rows(stored: dict[Key, dict[str, tuple[int, int]]]) -> list[SlotRow]:
    """Slot rows as a durable replica pages them: a counter's rows adjacent, one key object."""
    return [
        (key, _shard(key), actor, p, n)
        for key, slots in stored.items()
        for actor, (p, n) in sorted(slots.items())
    ]


def _load_named(store: CounterStore, rows: list[SlotRow]) -> int:
    """Load rows as a SQLite load pages them: the counters of one slot as named pages, one
    per tenant and namespace (actor None where it is the page's first), the others as
    slot rows."""
    slots_of: dict[Key, int] = {}
    for key, *_ in rows:
        slots_of[key] = slots_of.get(key, 0) + 1
    named: dict[tuple[str, str], list[NamedRow]] = {}
    first: dict[tuple[str, str], str] = {}
    for (tenant, namespace, name), shard, actor, p, n in rows:
        if slots_of[(tenant, namespace, name)] == 1:
            usual = first.setdefault((tenant, namespace), actor)
            same = None if actor == usual else actor
            named.setdefault((tenant, namespace), []).append((name, shard, same, p, n))
    loaded = 0
    for (tenant, namespace), page in named.items():
        loaded += store.load_page(NamedSlots(tenant, namespace, first[(tenant, namespace)], page))
    loaded += store.load_page([row for row in rows if slots_of[row[0]] > 1])
    return loaded


def _load_slots(store: CounterStore, rows: list[SlotRow]) -> int:
    return store.load_slots(rows)


def _same(loaded: CounterStore, merged: CounterStore) -> None:
    assert len(loaded) == len(merged)
    for key in KEYS:
        assert loaded.get(key) == merged.get(key)
        assert loaded.share(key) == merged.share(key)
        assert loaded.key_weight(key) == merged.key_weight(key)
    for shard in (0, 1):
        assert loaded.digest(shard) == merged.digest(shard)
        assert loaded.tenant_counts(shard) == merged.tenant_counts(shard)
        assert sorted(loaded.shard_shares(shard)) == sorted(merged.shard_shares(shard))
    # an all-zero stored slot still tells its actor's incarnation (more is the safe side)
    assert merged.incarnations().items() <= loaded.incarnations().items()


def _apply(store: CounterStore, key: Key, actor: str, delta: int) -> object:
    try:
        return store.increment_slot(key, actor, delta)
    except (CounterOverflowError, SlotFullError) as error:
        return type(error)


counts = st.one_of(st.integers(0, 3), st.integers(0, UINT64_MAX))
stored_states = st.dictionaries(
    st.sampled_from(KEYS),
    st.dictionaries(st.sampled_from(ACTORS), st.tuples(counts, counts), min_size=1),
)


changes = st.lists(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(ACTORS), st.integers(-3, 3)), max_size=4
)


@pytest.mark.parametrize("load", [_load_slots, _load_named])
@settings(max_examples=200, deadline=None)
@given(stored_states, st.lists(st.sampled_from(ACTORS), max_size=3), changes)
def test_load_slots_answers_as_merging_the_states(load, stored, early_actors, then):
    """Records load unweighed; whatever comes first after the load (a change, a share, a
    digest), every figure is the one merging the states would give."""
    loaded, merged = CounterStore(_shard), CounterStore(_shard)
    for actor in early_actors:  # actors interned before the load, in another order
        loaded.increment(("x", "y", "z"), actor, 0)
        merged.increment(("x", "y", "z"), actor, 0)
    rows = _rows(stored)
    held = load(loaded, rows)
    for key, state in states_of(rows):
        merged.merge(key, state)
    for key, actor, delta in then:
        assert _apply(loaded, key, actor, delta) == _apply(merged, key, actor, delta)
    assert all(loaded.value(key) == merged.value(key) for key in KEYS)  # reads weigh nothing
    _same(loaded, merged)
    assert held == sum(1 for slots in stored.values() if any(p or n for p, n in slots.values()))
    changed = {("x", "y", "z")} | {key for key, _, _ in then}
    assert {key for key, _, _ in loaded.take_dirty()} <= changed
    assert {key for key, _, _ in loaded.take_history_dirty()} <= changed


def test_a_counter_held_before_the_load_is_merged_and_written_back():
    store = CounterStore(_shard)
    store.increment(KEYS[1], "n1:2", 3)  # merged from a peer while the load ran
    store.take_dirty()
    rows: list[SlotRow] = [
        (KEYS[0], 1, "n1:1", 5, 1),
        (KEYS[1], 0, "n1:1", 7, 0),
        (KEYS[1], 0, "n2:1", 0, 2),
    ]
    assert store.load_slots(rows) == 2
    assert store.get(KEYS[0]) == PNCounter.from_slot("n1:1", 5, 1)
    assert store.value(KEYS[1]) == 3 + 7 - 2
    assert {key for key, _, _ in store.take_dirty()} == {KEYS[1]}
    assert len(store) == 2 and store.tenant_counts(0) == {"t": 1}


def test_a_named_page_merges_a_counter_held_before_the_load():
    store = CounterStore(_shard)
    store.increment(KEYS[1], "n1:2", 3)  # merged from a peer while the load ran
    store.take_dirty()
    page = NamedSlots("t", "ns", "n1:1", [("a", 1, None, 5, 1), ("bb", 0, "n2:1", 7, 0)])
    assert store.load_page(page) == 2
    assert store.get(KEYS[0]) == PNCounter.from_slot("n1:1", 5, 1)
    assert store.get(KEYS[1]) == PNCounter.from_slot("n1:2", 3, 0).merge(
        PNCounter.from_slot("n2:1", 7, 0)
    )
    assert {key for key, _, _ in store.take_dirty()} == {KEYS[1]}
    assert len(store) == 2 and store.tenant_counts(0) == {"t": 1}


def test_a_counter_of_zero_slots_is_not_held():
    store = CounterStore(_shard)
    assert store.load_slots([(KEYS[0], 1, "n1:1", 0, 0), (KEYS[1], 0, "n1:1", 0, 0)]) == 0
    assert len(store) == 0 and KEYS[0] not in store and store.digest(1) == 0
    assert store.load_page(NamedSlots("t", "ns", "n1:1", [("a", 1, None, 0, 0)])) == 0
    assert len(store) == 0 and KEYS[0] not in store and store._shards == {}


async def test_weigh_unweighed_weighs_every_loaded_record():
    loaded, merged = CounterStore(_shard), CounterStore(_shard)
    stored = {key: {"n1:1": (index + 1, index)} for index, key in enumerate(KEYS)}
    rows = _rows(stored)
    loaded.load_slots(rows)
    for key, state in states_of(rows):
        merged.merge(key, state)
    assert loaded._unweighed == {0, 1}
    assert await loaded.weigh_unweighed() == len(KEYS)
    assert not loaded._unweighed and await loaded.weigh_unweighed() == 0
    _same(loaded, merged)

"""The packed PN-counter is the PNCounter it packs: same value, merge, increment and delta, the
same refusals, and the semilattice laws on the bytes themselves."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter, SlotFullError
from crdt import packed as pk
from crdt.gcounter import UINT64_MAX
from tests.crdt.strategies import ACTOR_IDS, actors, pncounters

LAWS = settings(max_examples=200, deadline=None)
# Slots up to uint64, so sums leave int64 and slots fill: the refusals are compared too.
wide = pncounters(max_count=UINT64_MAX)
deltas = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3))


def _table() -> pk.ActorTable:
    table = pk.ActorTable()
    for actor in reversed(ACTOR_IDS):  # indexes in another order than the ids sort in
        table.index(actor)
    return table


TABLE = _table()


def packed(state: PNCounter) -> bytes:
    return pk.pack(state, TABLE)


@LAWS
@given(wide)
def test_unpack_of_pack_is_the_state(a: PNCounter) -> None:
    assert pk.unpack(packed(a), TABLE) == a
    assert pk.value(packed(a)) == a.value()
    assert len(packed(a)) == pk.SLOT_SIZE * len(a.actors())


@LAWS
@given(wide, st.lists(st.sampled_from(ACTOR_IDS)))
def test_unpack_only_is_the_restricted_state(a: PNCounter, chosen: list[str]) -> None:
    assert pk.unpack_only(packed(a), TABLE, chosen) == a.restricted_to(chosen)
    assert pk.unpack_only(packed(a), TABLE, frozenset(chosen)) == a.restricted_to(chosen)


@LAWS
@given(pncounters(max_count=3), pncounters(max_count=3))
def test_equal_states_and_only_they_pack_to_equal_bytes(a: PNCounter, b: PNCounter) -> None:
    assert (packed(a) == packed(b)) == (a == b)


@LAWS
@given(wide, wide)
def test_merge_is_the_object_merge(a: PNCounter, b: PNCounter) -> None:
    assert pk.unpack(pk.merge(packed(a), packed(b)), TABLE) == a.merge(b)


@LAWS
@given(wide, wide, wide)
def test_merge_is_associative(a: PNCounter, b: PNCounter, c: PNCounter) -> None:
    x, y, z = packed(a), packed(b), packed(c)
    assert pk.merge(x, pk.merge(y, z)) == pk.merge(pk.merge(x, y), z)


@LAWS
@given(wide, wide)
def test_merge_is_commutative_and_returns_a_dominating_argument(a: PNCounter, b: PNCounter) -> None:
    x, y = packed(a), packed(b)
    merged = pk.merge(x, y)
    assert merged == pk.merge(y, x)
    assert pk.merge(merged, x) is merged
    assert pk.merge(x, merged) is merged or merged == x


@LAWS
@given(wide)
def test_merge_is_idempotent(a: PNCounter) -> None:
    assert pk.merge(packed(a), packed(a)) == packed(a)


@LAWS
@given(wide, actors, st.integers(0, UINT64_MAX), st.integers(0, UINT64_MAX))
@example(PNCounter.empty(), "a", 0, 0)
def test_merge_slot_is_a_merge_with_that_slot(a: PNCounter, actor: str, p: int, n: int) -> None:
    before = packed(a)
    after, grown_p, grown_n = pk.merge_slot(before, TABLE.index(actor), p, n)
    expected = a.merge(PNCounter.from_slot(actor, p, n))
    assert pk.unpack(after, TABLE) == expected
    assert after == packed(expected)  # canonical: sorted, no empty slot
    old_p, old_n = a.slot(actor)
    assert (grown_p, grown_n) == (max(p - old_p, 0), max(n - old_n, 0))
    if expected == a:
        assert after is before


@LAWS
@given(wide, actors, deltas)
@example(PNCounter.empty().increment("a", 2**63 - 1), "a", 1)
@example(PNCounter.empty().increment("a", UINT64_MAX // 2).increment("a", -(2**62)), "a", 2**62)
def test_increment_is_the_object_increment(a: PNCounter, actor: str, delta: int) -> None:
    before = packed(a)
    try:
        expected = a.increment(actor, delta)
    except CounterOverflowError as error:
        with pytest.raises(type(error)):
            pk.increment(before, TABLE.index(actor), delta)
        return
    after, p, n = pk.increment(before, TABLE.index(actor), delta)
    assert after == packed(expected)
    assert (p, n) == expected.slot(actor)
    assert pk.slot(after, TABLE.index(actor)) == (p, n)


def test_a_full_slot_is_refused_with_slot_full_and_nothing_changes():
    state = packed(PNCounter.from_slot("a", UINT64_MAX, UINT64_MAX - 5))
    with pytest.raises(SlotFullError):
        pk.increment(state, TABLE.index("a"), 10)
    assert pk.increment(state, TABLE.index("b"), 10)[1:] == (10, 0)


def test_increment_refuses_what_is_not_an_int():
    with pytest.raises(TypeError):
        pk.increment(pk.EMPTY, 0, True)
    with pytest.raises(TypeError):
        pk.increment(pk.EMPTY, 0, 1.0)  # type: ignore[arg-type]


@LAWS
@given(wide, wide)
def test_delta_since_is_the_object_delta(a: PNCounter, b: PNCounter) -> None:
    newer = a.merge(b)
    delta = pk.delta_since(packed(newer), packed(a))
    assert pk.unpack(delta, TABLE) == newer.delta_since(a)
    assert pk.merge(packed(a), delta) == packed(newer)


def test_actor_table_interns_in_order_of_first_use():
    table = pk.ActorTable()
    assert [table.index(actor) for actor in ["x", "y", "x", "z"]] == [0, 1, 0, 2]
    assert table.actors == ["x", "y", "z"] and len(table) == 3
    with pytest.raises(TypeError):
        table.index(7)  # type: ignore[arg-type]
    assert len(table) == 3


@LAWS
@given(wide, wide)
def test_version_orders_states_as_merges_do(a: PNCounter, b: PNCounter) -> None:
    """A merge never lowers the version, and one that changes the state raises it: so the
    change feed can tell an older state of a counter from a newer one, decrements included."""
    both = a.merge(b)
    merged = packed(both)
    assert pk.version(merged) == sum(both.p.slots.values()) + sum(both.n.slots.values())
    for part in (packed(a), packed(b)):
        assert pk.version(merged) >= pk.version(part)
        assert (pk.version(merged) == pk.version(part)) == (merged == part)


@LAWS
@given(wide, actors, st.integers(-3, 3).filter(bool))
def test_any_increment_raises_the_version_a_decrement_too(a: PNCounter, actor: str, delta: int):
    before = packed(a)
    try:
        after, _, _ = pk.increment(before, TABLE.index(actor), delta)
    except (CounterOverflowError, SlotFullError):
        return
    assert pk.version(after) == pk.version(before) + abs(delta)
    assert pk.version(b"\0" * 16 + after, 16) == pk.version(after)  # after a store's header
    for state in (before, after):  # one unpack for both (the history's): the same figures
        assert pk.value_and_version(b"\0" * 16 + state, 16) == (pk.value(state), pk.version(state))

"""The semilattice laws, convergence of replicas, and delta-state equivalence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.gcounter import GCounter
from crdt.pncounter import PNCounter
from tests.crdt.strategies import actors, gcounters, pncounters

LAWS = settings(max_examples=200, deadline=None)


@LAWS
@given(gcounters(), gcounters(), gcounters())
def test_gcounter_merge_is_associative(a: GCounter, b: GCounter, c: GCounter) -> None:
    assert a.merge(b.merge(c)) == a.merge(b).merge(c)


@LAWS
@given(gcounters(), gcounters())
def test_gcounter_merge_is_commutative(a: GCounter, b: GCounter) -> None:
    assert a.merge(b) == b.merge(a)


@LAWS
@given(gcounters())
def test_gcounter_merge_is_idempotent(a: GCounter) -> None:
    assert a.merge(a) == a


@LAWS
@given(gcounters(), gcounters())
def test_gcounter_merge_is_an_upper_bound(a: GCounter, b: GCounter) -> None:
    merged = a.merge(b)
    for actor in a.actors() | b.actors():
        assert merged.get(actor) == max(a.get(actor), b.get(actor))
    assert merged.merge(a) == merged
    assert merged.value() >= max(a.value(), b.value())


@LAWS
@given(pncounters(), pncounters(), pncounters())
def test_pncounter_merge_is_associative(a: PNCounter, b: PNCounter, c: PNCounter) -> None:
    assert a.merge(b.merge(c)) == a.merge(b).merge(c)


@LAWS
@given(pncounters(), pncounters())
def test_pncounter_merge_is_commutative(a: PNCounter, b: PNCounter) -> None:
    assert a.merge(b) == b.merge(a)


@LAWS
@given(pncounters())
def test_pncounter_merge_is_idempotent(a: PNCounter) -> None:
    assert a.merge(a) == a


@LAWS
@given(pncounters(), pncounters())
def test_merge_never_mutates_its_arguments(a: PNCounter, b: PNCounter) -> None:
    a_slots = (dict(a.p.slots), dict(a.n.slots))
    b_slots = (dict(b.p.slots), dict(b.n.slots))
    a.merge(b)
    b.merge(a)
    assert (dict(a.p.slots), dict(a.n.slots)) == a_slots
    assert (dict(b.p.slots), dict(b.n.slots)) == b_slots


# Several replicas, each incrementing under its own actor: (replica, delta) in program order.
REPLICAS = 4
operations = st.lists(st.tuples(st.integers(0, REPLICAS - 1), st.integers(-(10**9), 10**9)))


def _replica_states(ops: list[tuple[int, int]]) -> list[PNCounter]:
    states = [PNCounter.empty()] * REPLICAS
    for replica, delta in ops:
        states[replica] = states[replica].increment(f"replica-{replica}", delta)
    return states


def _merge_tree(states: list[PNCounter], data: st.DataObject) -> PNCounter:
    """Merge `states` in the given order under a drawn grouping (a random binary tree)."""
    if len(states) == 1:
        return states[0]
    split = data.draw(st.integers(1, len(states) - 1))
    return _merge_tree(states[:split], data).merge(_merge_tree(states[split:], data))


@settings(max_examples=200, deadline=None)
@given(operations, st.data())
def test_any_merge_order_and_grouping_gives_the_sum_of_operations(
    ops: list[tuple[int, int]], data: st.DataObject
) -> None:
    states = _replica_states(ops)
    expected = sum(delta for _, delta in ops)
    order = data.draw(st.permutations(range(REPLICAS)))
    # Repeats model replayed messages: merge is idempotent, so they must not count twice.
    repeats = data.draw(st.lists(st.sampled_from(range(REPLICAS)), max_size=4))
    sequence = [states[i] for i in [*order, *repeats]]
    assert _merge_tree(sequence, data).value() == expected


@LAWS
@given(pncounters(), pncounters())
def test_delta_since_brings_the_older_state_to_the_merge(older: PNCounter, s: PNCounter) -> None:
    delta = s.delta_since(older)
    assert older.merge(delta) == older.merge(s)
    # The delta is part of `s` and holds only slots that grew past `older`.
    assert s.merge(delta) == s
    for actor in delta.actors():
        p, n = delta.slot(actor)
        old_p, old_n = older.slot(actor)
        assert p == 0 or p > old_p
        assert n == 0 or n > old_n


@LAWS
@given(pncounters(), pncounters(), pncounters())
def test_delta_merges_equal_full_state_merges_for_any_replica_that_includes_older(
    older: PNCounter, s: PNCounter, extra: PNCounter
) -> None:
    """For every r with r >= older (r.merge(older) == r): r.merge(s.delta_since(older)) ==
    r.merge(s). So a sender may ship deltas relative to any state the receiver acknowledged."""
    replica = older.merge(extra)
    assert replica.merge(s.delta_since(older)) == replica.merge(s)


@LAWS
@given(pncounters(), st.lists(st.tuples(st.sampled_from("abc"), st.integers(-50, 50))))
def test_delta_of_local_increments_reconstructs_the_new_state(
    old: PNCounter, ops: list[tuple[str, int]]
) -> None:
    new = old
    for actor, delta in ops:
        new = new.increment(actor, delta)
    assert old.merge(new.delta_since(old)) == new
    assert new.delta_since(old).merge(old) == new
    assert new.delta_since(new).is_empty()


@given(pncounters(), st.frozensets(actors))
def test_restricted_to_keeps_exactly_those_actors_slots(
    a: PNCounter, chosen: frozenset[str]
) -> None:
    part = a.restricted_to(chosen)
    assert part.actors() == a.actors() & chosen
    for actor in a.actors() | chosen:
        assert part.slot(actor) == (a.slot(actor) if actor in chosen else (0, 0))
    # what a slot-wise durable merge gets from it: nothing beyond what `a` holds
    assert a.merge(part) == a
    assert a.restricted_to(a.actors()) == a

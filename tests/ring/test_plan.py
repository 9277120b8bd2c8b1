"""plan(old, new): who must receive which shard, and from whom."""

from __future__ import annotations

import pytest

from ring.plan import Move, plan
from ring.ring import Ring, RingError


def ring(*table: tuple[str, ...], replicas: int = 2) -> Ring:
    return Ring(len(table), replicas, 0, table)


def test_a_replaced_node_is_the_source() -> None:
    old = ring(("a", "b"), ("b", "c"), ("c", "a"), ("c", "b"))
    new = ring(("d", "b"), ("b", "c"), ("c", "d"), ("c", "b"))
    assert plan(old, new) == (Move(0, "a", "d"), Move(2, "a", "d"))


def test_pairs_follow_list_order() -> None:
    old = ring(("a", "b", "c"), ("a", "b", "c"), replicas=3)
    new = ring(("d", "e", "c"), ("a", "b", "c"), replicas=3)
    assert plan(old, new) == (Move(0, "a", "d"), Move(0, "b", "e"))


def test_a_growing_list_copies_from_the_old_coordinator() -> None:
    old = ring(("b", "a"), ("a", "b"), replicas=3)
    new = ring(("b", "a", "c"), ("c", "a", "b"), replicas=3)
    assert plan(old, new) == (Move(0, "b", "c"), Move(1, "a", "c"))


def test_an_empty_ring_has_no_source() -> None:
    old = Ring.build([], shards=2)
    new = old.with_node("a")
    assert plan(old, new) == (Move(0, None, "a"), Move(1, None, "a"))


def test_reordering_a_list_moves_nothing() -> None:
    old = ring(("a", "b"), ("b", "a"))
    assert plan(old, ring(("b", "a"), ("a", "b"))) == ()
    assert plan(old, old) == ()


def test_shrinking_lists_move_nothing() -> None:
    old = Ring.build(["a", "b"], shards=4, replicas=3)
    assert plan(old, old.without_node("a")) == ()


def test_moves_are_sorted_by_shard_then_target() -> None:
    old = Ring.build(["a", "b", "c"], shards=16, replicas=3)
    moves = plan(old, old.with_node("d").with_node("e"))
    assert list(moves) == sorted(moves, key=lambda move: (move.shard, move.target))
    assert {move.target for move in moves} == {"d", "e"}


def test_rings_of_different_sizes_cannot_be_planned() -> None:
    with pytest.raises(RingError):
        plan(Ring.build(["a"], shards=2), Ring.build(["a"], shards=4))

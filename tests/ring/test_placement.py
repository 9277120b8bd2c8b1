"""Placement properties on Q = 256: determinism, balance, and minimal movement.

Targets (DESIGN.md, Placement): for 1..16 nodes and N in {1, 2, 3}, the most loaded node holds
at most 1.25 x the replicas of the least loaded, the same holds for coordinators, and a join
or leave moves at most 1.5 x a fair share, only onto the joiner or away from the leaver.
"""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ring.hashing import hash64
from ring.plan import plan
from ring.ring import Ring
from tests.ring.strategies import (
    SHARDS,
    assert_balanced,
    assert_well_formed,
    fair_share,
    memberships,
    node_ids,
    replication,
)

PLACEMENT = settings(max_examples=60, deadline=None)


def assert_join_moves(old: Ring, new: Ring, joiner: str) -> None:
    moves = plan(old, new)
    assert moves, "a joining node takes some replicas"
    assert {move.target for move in moves} == {joiner}
    # The source has the state: a node of the old list, or nobody when the ring was empty.
    assert all(move.source in old.table[move.shard] for move in moves if old.nodes)
    assert all(move.source is None for move in moves if not old.nodes)
    assert len(moves) == new.load()[joiner]
    assert len(moves) <= 1.5 * fair_share(SHARDS, new.replicas, len(new.nodes))
    for before, after in zip(old.table, new.table, strict=True):
        assert set(after) - set(before) <= {joiner}


def assert_leave_moves(old: Ring, new: Ring, leaver: str) -> None:
    moves = plan(old, new)
    assert all(move.source == leaver for move in moves)
    assert len(moves) <= 1.5 * fair_share(SHARDS, old.replicas, len(old.nodes))
    for before, after in zip(old.table, new.table, strict=True):
        # No replica changes hands between two nodes that both stay.
        assert set(before) - {leaver} <= set(after)


@PLACEMENT
@given(st.data(), memberships, replication)
@example(None, {"node-0"}, 1)
def test_same_members_same_ring_in_any_order(
    data: st.DataObject | None, nodes: set[str], replicas: int
) -> None:
    ring = Ring.build(sorted(nodes), replicas=replicas)
    if data is not None:
        order = data.draw(st.permutations(sorted(nodes)))
        again = Ring.build(order, replicas=replicas)
        assert again == ring and again.checksum() == ring.checksum()
    assert ring.epoch == 0
    assert set(ring.nodes) == nodes
    assert_well_formed(ring)
    assert_balanced(ring)


def test_balance_for_every_cluster_size() -> None:
    # The exhaustive version of the property above, for operator-style names.
    for replicas in (1, 2, 3):
        for count in range(1, 17):
            ring = Ring.build([f"node-{i}" for i in range(count)], replicas=replicas)
            assert_well_formed(ring)
            assert_balanced(ring)


@PLACEMENT
@given(memberships, node_ids, replication)
@example({"node-0"}, "node-0", 1)  # joining an empty ring: nobody to copy from
def test_a_join_moves_replicas_only_onto_the_joiner(
    nodes: set[str], joiner: str, replicas: int
) -> None:
    nodes.discard(joiner)
    old = Ring.build(sorted(nodes)[:15], replicas=replicas)
    new = old.with_node(joiner)
    assert new.epoch == old.epoch + 1
    assert_well_formed(new)
    assert_balanced(new)
    assert_join_moves(old, new, joiner)


@PLACEMENT
@given(memberships, replication, st.integers(0, 15))
def test_a_leave_moves_only_the_leavers_replicas(
    nodes: set[str], replicas: int, index: int
) -> None:
    old = Ring.build(nodes, replicas=replicas)
    leaver = old.nodes[index % len(old.nodes)]
    new = old.without_node(leaver)
    assert new.epoch == old.epoch + 1
    assert leaver not in new.nodes
    assert_well_formed(new)
    if new.nodes:
        assert_balanced(new)
    assert_leave_moves(old, new, leaver)


operations = st.lists(
    st.tuples(st.just("join"), node_ids) | st.tuples(st.just("leave"), st.integers(0, 15)),
    max_size=16,
)


@settings(max_examples=120, deadline=None)
@given(memberships, replication, operations)
def test_balance_and_minimal_moves_survive_any_sequence_of_changes(
    nodes: set[str], replicas: int, steps: list[tuple[str, str | int]]
) -> None:
    ring = Ring.build(nodes, replicas=replicas)
    for action, arg in steps:
        old = ring
        if action == "join" and isinstance(arg, str):
            if arg in ring.nodes or len(ring.nodes) == 16:
                continue
            ring = ring.with_node(arg)
            assert_join_moves(old, ring, arg)
        elif isinstance(arg, int) and len(ring.nodes) > 1:
            leaver = ring.nodes[arg % len(ring.nodes)]
            ring = ring.without_node(leaver)
            assert_leave_moves(old, ring, leaver)
        assert_well_formed(ring)
        assert_balanced(ring)


def test_a_long_walk_through_every_cluster_size() -> None:
    # Hypothesis favours small clusters; this walk spends most of its steps at 8..16 nodes.
    for replicas in (1, 2, 3):
        ring, fresh = Ring.build(["node-0"], replicas=replicas), 1
        for step in range(240):
            roll = hash64(f"{replicas}/{step}".encode())
            growing = (step // 40) % 2 == 0
            old, count = ring, len(ring.nodes)
            if count == 1 or (count < 16 and roll % 4 < (3 if growing else 1)):
                ring = ring.with_node(f"node-{fresh}")
                assert_join_moves(old, ring, f"node-{fresh}")
                fresh += 1
            else:
                leaver = ring.nodes[roll % count]
                ring = ring.without_node(leaver)
                assert_leave_moves(old, ring, leaver)
            assert_well_formed(ring)
            assert_balanced(ring)


@PLACEMENT
@given(memberships, replication)
def test_leaving_and_rejoining_restores_a_balanced_ring(nodes: set[str], replicas: int) -> None:
    ring = Ring.build(nodes, replicas=replicas)
    for node in sorted(nodes)[:3]:
        ring = ring.without_node(node).with_node(node) if len(ring.nodes) > 1 else ring
        assert_well_formed(ring)
        assert_balanced(ring)


def test_changes_are_fast() -> None:
    ring = Ring.build([f"node-{i}" for i in range(15)], replicas=3)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        ring.with_node("node-15").without_node("node-3")
        best = min(best, time.perf_counter() - start)
    assert best < 0.05

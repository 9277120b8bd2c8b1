"""Hypothesis strategies and checks shared by the ring tests."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st

from ring.ring import Ring

SHARDS = 256

# Generated names as an operator would pick them, plus arbitrary short text (any Unicode).
node_ids = st.one_of(
    st.integers(0, 999).map(lambda i: f"node-{i}"), st.text(min_size=1, max_size=6)
)
memberships = st.sets(node_ids, min_size=1, max_size=16)
replication = st.sampled_from([1, 2, 3])


def spread(counts: Mapping[str, int]) -> float:
    """Most over least loaded; the balance target is <= 1.25."""
    return max(counts.values()) / min(counts.values())


def fair_share(shards: int, replicas: int, members: int) -> float:
    """Average replicas per node: Q*N/M, or Q when every node holds everything."""
    return shards * min(replicas, members) / members


def assert_well_formed(ring: Ring) -> None:
    size = min(ring.replicas, len(ring.nodes))
    for shard in range(ring.shards):
        entry = ring.preference_list(shard)
        assert len(entry) == size
        assert len(set(entry)) == size
    assert sum(ring.load().values()) == ring.shards * size
    assert sorted(ring.load()) == list(ring.nodes)


def assert_balanced(ring: Ring) -> None:
    assert spread(ring.load()) <= 1.25, ring.load()
    # Coordinators are balanced by swaps that move no data, so they meet the same target.
    assert spread(ring.coordinators()) <= 1.25, ring.coordinators()

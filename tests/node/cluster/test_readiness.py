"""The readiness rule: every shard needs R serving and W alive replicas in this node's view."""

from __future__ import annotations

from node.cluster.readiness import quorum_gaps

TABLE = [("a", "b", "c"), ("b", "c", "d"), ("c", "d", "a"), ("d", "a", "b")]


def test_every_shard_with_a_quorum_of_serving_replicas_is_ready():
    assert quorum_gaps(TABLE, {"a", "b", "c", "d"}, {"a", "b", "c", "d"}, 2, 2) == []
    # One node may be joining or down: two of each shard's three replicas still serve.
    assert quorum_gaps(TABLE, {"a", "b", "c"}, {"a", "b", "c"}, 2, 2) == []


def test_a_node_whose_peers_still_look_joining_is_not_ready():
    # The bug of issue 11: this node (a) is up, the others are alive but not serving yet.
    everyone = {"a", "b", "c", "d"}
    assert quorum_gaps(TABLE, {"a"}, everyone, 2, 2) == [0, 1, 2, 3]
    assert quorum_gaps(TABLE, {"a", "b"}, everyone, 2, 2) == [1, 2]


def test_writes_count_live_replicas_and_reads_serving_ones():
    # R=1: one serving replica reads; W=3: all three must be alive to write.
    assert quorum_gaps(TABLE, {"a", "b", "c", "d"}, {"a", "b", "c"}, 1, 3) == [1, 2, 3]
    assert quorum_gaps(TABLE, {"d"}, {"a", "b", "c", "d"}, 1, 3) == [0]


def test_a_shard_with_fewer_replicas_than_a_quorum_needs_all_of_them():
    small = [("a",), ("a", "b")]
    assert quorum_gaps(small, {"a"}, {"a", "b"}, 2, 2) == [1]
    assert quorum_gaps(small, {"a", "b"}, {"a", "b"}, 2, 2) == []
    assert quorum_gaps([()], set(), set(), 2, 2) == [0]  # a shard no node holds

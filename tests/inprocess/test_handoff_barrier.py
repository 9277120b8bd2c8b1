"""Hand-off as a write barrier: a source that answered a pull sends its later writes of the
shard to the new owner too, whether or not gossip has told it of the pending ring.

Three nodes, then n4 joins. n2 hears no gossip at all (every gossip message to it is lost,
while its own gossip still reaches the others, so they keep it alive): it learns of the
pending ring only from n4's PULL. A write coordinated by n2 after that pull must reach n4;
before the fix n2 went on writing to the old replica set only, and once the ring switched
the write was missing from a replica that had already taken its snapshot.
"""

from __future__ import annotations

import pytest

from crdt import PNCounter
from node.base.errors import PeerError
from node.cluster import wire
from node.cluster.handoff import NOT_HELD
from node.coordination.ops import Op, OpKind
from ring.claimant import handoff_mark
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_a_source_adopts_the_pending_ring_before_it_answers_a_pull(
    inproc: InProcessCluster,
):
    n1, n2, _ = await inproc.start(3, failure_timeout_s=30.0)  # nobody marked down here
    inproc.network.drop(1.0, dst=n2.address, kinds=[wire.GOSSIP])  # n2 hears no gossip
    joiner = await inproc.launch("n4", seeds=())
    await eventually(lambda: joiner.cluster.ready, "n4 up on its own")
    await inproc.admit(n1, joiner)
    await eventually(lambda: n1.cluster.state.pending is not None, "a pending ring at n1")
    pending = n1.cluster.state.pending
    assert pending is not None
    current = n1.cluster.state.current
    # a counter n2 coordinates now whose shard n4 receives in the pending ring
    key = next(
        k
        for k in (("t", "ns", f"k{i}") for i in range(10_000))
        if current.table[current.shard_of(*k)][0] == "n2"
        and "n4" in pending.table[current.shard_of(*k)]
    )
    mark = handoff_mark(pending)
    await eventually(
        lambda: joiner.cluster.synced.get("n4") == mark,
        "n4 caught up with the pending ring",
        show=inproc.describe,
    )
    assert n2.cluster.state.pending == pending  # learned from the pull, not from gossip

    (result,) = await n2.coordinator.run([Op(OpKind.INCREMENT, key, 7)], "quorum")

    assert result.ok, result
    assert joiner.value(key) == 7  # the write went to the receiving node with the others


async def test_a_replica_write_for_a_shard_the_node_does_not_hold_is_refused(
    inproc: InProcessCluster,
):
    n1, *_, n4 = await inproc.start(4)
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    link = n1.parts.pool.link(n4.address)

    with pytest.raises(PeerError, match=f"n4 {NOT_HELD} shards"):
        await link.replicate_slot(key, "n1:1", 5, 0)
    with pytest.raises(PeerError, match="nothing applied"):
        await link.replicate(key, PNCounter.empty().increment("n1:1", 5))

    assert n4.value(key) is None  # nothing was merged
    held = inproc.key_where(lambda replicas: "n4" in replicas)
    await link.replicate_slot(held, "n1:1", 5, 0)  # a shard it holds: merged as ever
    assert n4.value(held) == 5


async def test_a_peer_with_another_replica_count_is_refused_and_never_joins(
    inproc: InProcessCluster, caplog: pytest.LogCaptureFixture
):
    n1, *_ = await inproc.start(3)
    inproc.settings["replicas"] = 2  # n4 was started with --replicas 2
    stranger = await inproc.launch("n4", seeds=[n1.address])
    sent = inproc.network.sent[wire.GOSSIP]

    await eventually(lambda: inproc.network.sent[wire.GOSSIP] > sent + 30, "some gossip rounds")

    assert n1.cluster.view.get("n4") is None  # never merged, so never joins
    assert "n4" not in n1.cluster.state.nodes()
    assert stranger.cluster.view.get("n1") is None  # nor did n4 take n1's view
    assert "2 replicas per shard, this node 3" in n1.cluster.refused["n4"]
    assert "refusing peer n4" in caplog.text


async def test_a_cut_off_claimant_cannot_switch_a_ring_of_its_own(inproc: InProcessCluster):
    """n1 is cut off from n2..n4, and each side admits a joiner: both n1 and n2 believe they
    are the claimant and plan a ring at the same epoch. Only the side holding a majority of
    the ring switches; n1's plan waits, and after the heal one ring holds both joiners."""
    n1, n2, n3, n4 = await inproc.start(4)
    network = inproc.network
    a5, a6 = inproc.address_of("n5"), inproc.address_of("n6")
    majority = [n2.address, n3.address, n4.address, a5]
    network.partition([n1.address, a6], majority)
    start = n1.cluster.state.current
    n6 = await inproc.launch("n6", seeds=())
    n5 = await inproc.launch("n5", seeds=())
    await eventually(lambda: n5.cluster.ready and n6.cluster.ready, "n5 and n6 up alone")
    await eventually(
        lambda: {"n2", "n3", "n4"} <= n1.cluster.down and "n1" in n2.cluster.down,
        "each side sees the other down",
    )

    await inproc.admit(n1, n6)
    await inproc.admit(n2, n5)

    await eventually(
        lambda: "n5" in n2.cluster.state.current.nodes, "the majority side switched", 10.0
    )
    await eventually(
        lambda: (
            (pending := n1.cluster.state.pending) is not None
            and "n6" in pending.nodes
            and n6.cluster.synced.get("n6") == handoff_mark(pending)
        ),
        "n6 caught up with n1's plan",
        10.0,
        show=inproc.describe,
    )
    sent = network.sent[wire.GOSSIP]
    await eventually(lambda: network.sent[wire.GOSSIP] > sent + 60, "more gossip rounds")
    assert n1.cluster.state.current == start, inproc.describe()  # no majority: no switch

    network.heal()
    await inproc.settled(timeout=20.0)
    assert set(n1.cluster.state.current.nodes) == {"n1", "n2", "n3", "n4", "n5", "n6"}

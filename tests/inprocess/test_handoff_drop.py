"""Shards a node lost in a ring change are handed to their owners, and only then dropped.

n4 leaves a cluster of four. Once the ring has switched without it, a counter of a shard it
lost is put in its memory, as a `consistency=one` write that reached nobody else would be:
the only copy. While its pushes to the owners are lost it must keep the counter; once they
get through, the counter must be on every owner of its shard and n4 must forget every
shard it no longer holds.
"""

from __future__ import annotations

from crdt import PNCounter
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_a_leaver_hands_its_shards_over_and_then_forgets_them(inproc: InProcessCluster):
    n1, *_, n4 = await inproc.start(4)
    key = inproc.key_where(lambda replicas: "n4" in replicas)
    (result,) = await n4.coordinator.run([Op(OpKind.INCREMENT, key, 3)], "quorum")
    assert result.ok and n4.value(key) == 3

    n1.cluster.apply("n4", "leave")

    await eventually(lambda: len(n4.store) == 0, "n4 forgot every shard", show=inproc.describe)
    assert "n4" not in n4.cluster.state.current.nodes
    await inproc.converged(
        key, 3, nodes=[inproc.nodes[n] for n in n1.cluster.replicas(n1.cluster.shard_of(key))]
    )


async def test_an_only_copy_is_kept_until_every_owner_took_it(inproc: InProcessCluster):
    n1, *_, n4 = await inproc.start(4)
    key = inproc.key_where(lambda replicas: "n4" in replicas)
    network = inproc.network
    network.drop(1.0, src=n4.address, kinds=[wire.PUSH])  # n4's hand-over pushes are lost
    n1.cluster.apply("n4", "leave")
    await eventually(
        lambda: "n4" not in n4.cluster.state.current.nodes and n4.cluster.state.pending is None,
        "n4 out of the ring, in n4's view",
        show=inproc.describe,
    )
    n4.store.merge(key, PNCounter.empty().increment(n4.cluster.actor, 5))
    owners = [inproc.nodes[n] for n in n4.cluster.replicas(n4.cluster.shard_of(key))]
    assert all(owner.value(key) is None for owner in owners)  # n4's is the only copy
    await eventually(
        lambda: any(network.in_flight[(n4.address, o.address, wire.PUSH)] for o in owners),
        "n4 trying to hand a shard over",
    )

    assert n4.value(key) == 5  # kept: no owner acknowledged it

    network.heal()
    await inproc.converged(key, 5, nodes=owners)
    await eventually(lambda: len(n4.store) == 0, "n4 forgot every shard once they were taken")

"""A quorum read by a node whose ring lags does not count toward R a node that no longer
replicates the shard, nor itself when its pending ring takes the shard from it.

Three nodes, then n4 joins. One node hears no gossip (its own gossip still reaches the
others, so they keep it alive): it learns of the pending ring from n4's PULL, but not of
the switch. The others switch; a write at quorum, acknowledged by the new replicas, misses
the lagging node. A former replica answered a READ for a shard it no longer holds (its empty
state, counted toward R): it now refuses it (ShardNotHeld) and the reader asks another. A
lagging node that the pending ring takes the shard from counted its own stale state: it now
asks R other replicas (replication.read_peers).
"""

from __future__ import annotations

from node.cluster import wire
from node.coordination.ops import Op, OpKind
from ring.ring import Ring
from tests.inprocess.cluster import InProcessCluster, Node, eventually


async def _n4_joins_while_n2_hears_no_gossip(
    inproc: InProcessCluster,
) -> tuple[Node, Ring, Ring]:
    """n1, n2, n3, then n4 admitted while n2 hears no gossip: (n2, the old ring, the
    pending one)."""
    n1, n2, _ = await inproc.start(3, failure_timeout_s=30.0, request_timeout_s=1.0)
    inproc.network.drop(1.0, dst=n2.address, kinds=[wire.GOSSIP])  # n2 hears no gossip
    old = n1.cluster.state.current
    joiner = await inproc.launch("n4", seeds=())
    await eventually(lambda: joiner.cluster.ready, "n4 up on its own")
    await inproc.admit(n1, joiner)
    await eventually(lambda: n1.cluster.state.pending is not None, "a pending ring at n1")
    pending = n1.cluster.state.pending
    assert pending is not None
    return n2, old, pending


async def _switched_but_n2(inproc: InProcessCluster, n2: Node, old: Ring, pending: Ring) -> None:
    others = [inproc.nodes[n] for n in ("n1", "n3", "n4")]
    await eventually(
        lambda: (
            all(node.cluster.state.current.checksum() == pending.checksum() for node in others)
            and n2.cluster.state.current.checksum() == old.checksum()
        ),
        "the others switched to the new ring, n2 not",
        timeout=15.0,
        show=inproc.describe,
    )


async def test_a_lagging_ring_does_not_count_a_former_replica_toward_a_read_quorum(
    inproc: InProcessCluster,
):
    n2, old, pending = await _n4_joins_while_n2_hears_no_gossip(inproc)

    def fits(shard: int) -> bool:
        before, after = old.table[shard], pending.table[shard]
        peers = [n for n in before if n != "n2"]
        return "n2" in before and "n2" in after and peers[0] not in after

    key = next(k for k in (("t", "ns", f"k{i}") for i in range(10_000)) if fits(old.shard_of(*k)))
    shard = old.shard_of(*key)
    former = next(n for n in old.table[shard] if n != "n2")  # B: n2 asks it first
    await _switched_but_n2(inproc, n2, old, pending)
    assert not inproc.nodes[former].cluster.holds(shard)

    # n2's copy of the write is lost; the new replicas acknowledge it at quorum
    inproc.network.drop(1.0, dst=n2.address, kinds=[wire.SLOTS, wire.REPLICATE, wire.PUSH])
    writer = inproc.nodes[next(n for n in pending.table[shard] if n != "n2")]
    (wrote,) = await writer.coordinator.run([Op(OpKind.INCREMENT, key, 7)], "quorum")
    assert wrote.ok and wrote.value == 7, wrote
    assert inproc.nodes[former].value(key) is None  # B does not hold it: it left the shard

    (read,) = await n2.coordinator.run([Op(OpKind.GET, key)], "quorum")
    inproc.network.heal()
    # R + W > N: a quorum read sees the write acknowledged at quorum (or is refused)
    assert not read.ok or read.value == 7, (read, former, old.table[shard], pending.table[shard])


async def test_a_lagging_former_replica_does_not_count_itself_toward_a_read_quorum(
    inproc: InProcessCluster,
):
    """The same lag, where n2 itself is the replica the shard moved away from: it still
    serves the shard from its old ring and counts its own (no longer written) state as one
    of R."""
    n2, old, pending = await _n4_joins_while_n2_hears_no_gossip(inproc)
    key = next(
        k
        for k in (("t", "ns", f"k{i}") for i in range(10_000))
        if "n2" in old.table[old.shard_of(*k)] and "n2" not in pending.table[old.shard_of(*k)]
    )
    shard = old.shard_of(*key)
    asked = next(n for n in old.table[shard] if n != "n2")  # the peer n2 asks first
    await _switched_but_n2(inproc, n2, old, pending)
    assert n2.coordinator.owner(shard) == "n2"  # n2 still serves the shard

    # the write reaches n4 and the third replica, not `asked` (one replica missing a write)
    inproc.network.drop(1.0, dst=inproc.nodes[asked].address, kinds=[wire.SLOTS, wire.REPLICATE])
    (wrote,) = await inproc.nodes["n4"].coordinator.run([Op(OpKind.INCREMENT, key, 7)], "quorum")
    assert wrote.ok and wrote.value == 7, wrote

    (read,) = await n2.coordinator.run([Op(OpKind.GET, key)], "quorum")
    inproc.network.heal()
    assert not read.ok or read.value == 7, (read, asked, old.table[shard], pending.table[shard])

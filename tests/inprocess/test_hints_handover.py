"""A hint that lands while its shard is being handed over (node/cluster/handover.py,
node/coordination/hints.py): the hand-over pushed a copy taken before the hint, so it must
not drop the shard after those pushes; it keeps it and pushes it again."""

from __future__ import annotations

from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

PUSH_DELAY_S = 0.8  # per push frame from n4: a hand-over round of 3 owners takes 2.4 s


async def test_a_hint_landing_during_the_hand_over_of_its_shard_reaches_the_replicas(
    inproc: InProcessCluster,
):
    """A client answered `"hinted": true` relies on the increment reaching the replicas once
    the node reaches them again. n4 holds a hint (k0) of a shard it does not replicate and
    is pushing that shard to its replicas when its failure detector marks them down (gossip
    lost, pushes still delivered), so an increment of k1, of the same shard, is hinted
    too. The round's pushes carry the copy taken before k1: the shard stays here, k1 in it,
    and reaches the replicas once they are back, after which n4 drops the shard."""
    await inproc.start(4)
    k0, k1 = _keys_of_one_shard_n4_does_not_replicate(inproc)
    entry = inproc.nodes["n4"]
    replicas = [inproc.nodes[n] for n in inproc.replicas(k0)]
    addresses = [r.address for r in replicas]
    net = inproc.network
    net.partition([entry.address], addresses)
    await eventually(lambda: _cut_off(entry, replicas), "n4 cut off from the replicas")
    (first,) = await entry.coordinator.run([Op(OpKind.INCREMENT, k0, 2)], "one")
    assert first.ok and first.hinted, first

    net.heal()  # back, but n4's pushes are slow: the hand-over round takes a while
    for address in addresses:
        net.delay(PUSH_DELAY_S, PUSH_DELAY_S, src=entry.address, dst=address, kinds=[wire.PUSH])
    await eventually(lambda: net.pending([wire.PUSH]) > 0, "n4 pushing the shard")
    for address in addresses:  # gossip alone is lost: n4 marks the replicas down
        net.drop(1.0, src=entry.address, dst=address, kinds=[wire.GOSSIP])
        net.drop(1.0, src=address, dst=entry.address, kinds=[wire.GOSSIP])
    await eventually(lambda: _cut_off(entry, replicas), "the replicas down in n4's view")
    assert entry.value(k0) == 2, "the round ended before the hint: nothing tested"
    (second,) = await entry.coordinator.run([Op(OpKind.INCREMENT, k1, 3)], "one")
    assert second.ok and second.hinted, second

    await eventually(lambda: net.pending([wire.PUSH]) == 0, "n4's round of pushes done", 6.0)
    assert entry.value(k1) == 3, "n4 dropped a hint it never pushed"
    net.heal()
    await inproc.converged(k0, 2, replicas)
    await inproc.converged(k1, 3, replicas)
    await eventually(
        lambda: entry.value(k0) is None and entry.value(k1) is None, "n4 dropped the shard"
    )


def _keys_of_one_shard_n4_does_not_replicate(inproc: InProcessCluster) -> tuple[Key, Key]:
    first = inproc.key_where(lambda replicas: "n4" not in replicas)
    cluster = inproc.nodes["n1"].cluster
    shard = cluster.shard_of(first)
    for i in range(10_000):
        key = ("t", "ns", f"other{i}")
        if key != first and cluster.shard_of(key) == shard:
            return first, key
    raise AssertionError("no second key of the shard")


def _cut_off(node: Node, replicas: list[Node]) -> bool:
    reachable = node.coordinator.replicator.reachable
    return not any(reachable(r.node_id) for r in replicas)

"""A node that recovers while a replica is down says what it may lack, and pulls it from
that replica once it is back.

n3 holds the only copy of an increment (a `consistency=one` write whose replication was
lost) and is then cut off. n1 restarts meanwhile and recovers from n2 alone. It must name
n3 and the shard it could not pull from it, and once n3 is reachable again, pull it: the
write is on n1 then, though n3 never pushes it (its repair pushes stay lost).
"""

from __future__ import annotations

from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually

LOST_FROM_N3 = [wire.SLOTS, wire.REPLICATE, wire.PUSH]


async def test_a_recovery_without_a_down_replica_pulls_from_it_when_it_is_back(
    inproc: InProcessCluster,
):
    n1, _, n3 = await inproc.start(3)
    network = inproc.network
    key = ("t", "ns", "only-on-n3")
    shard = n1.cluster.shard_of(key)
    network.drop(1.0, src=n3.address, kinds=LOST_FROM_N3)
    (result,) = await n3.coordinator.run([Op(OpKind.INCREMENT, key, 4)], "one")
    assert result.ok and n3.value(key) == 4
    network.isolate(n3.address)
    await inproc.kill(n1)

    back = await inproc.restart(n1)
    await eventually(lambda: back.cluster.ready, "n1 recovered", timeout=10.0)

    assert shard in back.parts.handoff.missed.get("n3", set())  # it says what it lacks
    assert back.value(key) is None
    network.heal()
    network.drop(1.0, src=n3.address, kinds=LOST_FROM_N3)  # n3 repairs nobody by itself
    await eventually(lambda: back.value(key) == 4, "n1 pulled n3's write", timeout=10.0)
    await eventually(lambda: not back.parts.handoff.missed, "nothing missed any more")

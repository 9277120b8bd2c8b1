"""A restarted node refuses replica reads until it has recovered (peer_endpoint.NotRecovered),
as it refuses RESERVE and RESOLVE: right after a start its store holds nothing (the durable
copy is loaded once a peer was heard, then peers are pulled). A coordinator whose view still
shows the node serving (it restarted faster than the failure timeout) would otherwise count
that empty answer as one of R, and a quorum read would miss an increment acknowledged by W
replicas (R + W > N); refused, it asks another replica.
"""

from __future__ import annotations

from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster


async def test_a_quorum_read_right_after_a_replica_restarts_sees_an_acknowledged_write(
    inproc: InProcessCluster,
):
    n1, n2, n3 = await inproc.start(3)
    key = inproc.key_where(lambda replicas: replicas == ("n2", "n1", "n3"))
    # n3 lags: the write's replication to it is lost (anti-entropy would bring it later)
    inproc.network.drop(1.0, dst=n3.address, kinds=[wire.SLOTS, wire.REPLICATE])
    (written,) = await n1.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "quorum")
    assert written.ok and written.value == 5, written
    assert (n1.value(key), n2.value(key), n3.value(key)) == (5, 5, None)

    # Gossip (and with it anti-entropy) held still for the few milliseconds this takes, as
    # between two rounds (0.5 s by default): n3 has not caught up yet, and n2's first
    # exchange after its start has not happened yet (a moment every start has).
    await inproc.pause_gossip([n1, n3])
    await inproc.kill(n2)  # kill -9, and back at once
    back = await inproc.restart(n2)
    await inproc.pause_gossip([back])
    assert not back.cluster.recovered and n3.cluster.serving("n2")

    (read,) = await n3.coordinator.run([Op(OpKind.GET, key)], "quorum")
    inproc.network.heal()
    assert read.ok, read
    assert read.value == 5, read  # acknowledged by W = 2 of N = 3; R = 2

"""Liveness judged per direction: a replica whose gossip reaches us but which does not answer
us (our messages to it are lost) is heard, so the failure detector keeps it up, yet our link
to it is dead. It must not count as a live replica for writes: `all` is refused before
anything applies (503), rather than applied and timed out (504), and a quorum of the
replicas that answer still succeeds. Once the network heals, it counts again.
"""

from __future__ import annotations

from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


def _increment(key: tuple[str, str, str], delta: int) -> list[Op]:
    return [Op(OpKind.INCREMENT, key, delta)]


async def test_a_replica_heard_but_not_answering_does_not_count_for_writes(
    inproc: InProcessCluster,
):
    # A peer whose replies are lost gossips to us once per exchange timeout (1 s), longer
    # than the usual 0.6 s failure timeout here: keep the detector out of it.
    await inproc.start(3, failure_timeout_s=3.0)
    key = inproc.key_where(lambda replicas: True)
    a, b, c = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.partition([a.address], [c.address], one_way=True)  # a -> c lost only

    await eventually(
        lambda: not a.parts.pool.reachable(c.address), f"{a.node_id}'s link to {c.node_id} dead"
    )
    assert c.node_id not in a.cluster.down  # its gossip still arrives: alive to the detector
    assert a.cluster.alive(c.node_id)

    (refused,) = await a.coordinator.run(_increment(key, 8), "all")
    assert refused.problem is not None, refused
    assert refused.problem["status"] == 503, refused.problem
    assert refused.problem["may_have_applied"] is False
    assert a.value(key) is None  # nothing applied
    assert (await a.coordinator.run(_increment(key, 1), "quorum"))[0].value == 1

    # Both other links cut: a quorum is out of reach, refused up front as well.
    inproc.network.partition([a.address], [b.address], one_way=True)
    await eventually(lambda: not a.parts.pool.reachable(b.address), "link to b dead")
    (out_of_reach,) = await a.coordinator.run(_increment(key, 16), "quorum")
    assert out_of_reach.problem is not None and out_of_reach.problem["status"] == 503
    assert out_of_reach.problem["may_have_applied"] is False
    assert a.value(key) == 1

    inproc.network.heal()
    await eventually(
        lambda: all(a.parts.pool.reachable(n.address) for n in (b, c)),
        "links back",
        show=inproc.describe,
    )
    assert (await a.coordinator.run(_increment(key, 2), "all"))[0].value == 3
    await inproc.converged(key, 3, [a, b, c])


async def test_a_coordinator_our_link_cannot_reach_is_passed_over(inproc: InProcessCluster):
    """A keyed op runs on its shard's first serving replica; when our own link to that node
    is dead (it still gossips to us), the op goes to the next serving replica we reach,
    rather than failing a forward that never left (503 "may have applied")."""
    await inproc.start(3, failure_timeout_s=3.0)
    key = inproc.key_where(lambda replicas: True)
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.partition([second.address], [first.address], one_way=True)
    await eventually(
        lambda: not second.parts.pool.reachable(first.address),
        f"{second.node_id}'s link to {first.node_id} dead",
    )
    assert second.cluster.alive(first.node_id)  # alive to the detector, not reachable by us

    keyed = [Op(OpKind.INCREMENT, key, 5, idem="retry-safe-1")]
    (result,) = await second.coordinator.run(keyed, "quorum", fingerprint="f1")
    assert result.problem is None, result.problem
    assert result.value == 5
    inproc.network.heal()
    await inproc.converged(key, 5, list(inproc.nodes.values()))

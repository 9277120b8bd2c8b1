"""A leaver restarted before its hand-over finished still hands over what its disk holds
(handover.py: "a hand-over cut short by a stop ... is handed over after the restart rather
than forgotten on disk"). A node out of the ring loads its own copy's shards
(Handoff.step), so a sync-acknowledged hint held there reaches the counter's replicas; it
loaded its copy only in the recovery branch, which runs only while the node is in the
current ring.
"""

from __future__ import annotations

from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_a_leaver_restarted_mid_hand_over_still_hands_its_disk_copy_over(
    inproc: InProcessCluster,
):
    await inproc.start(4, failure_timeout_s=3.0, durability="sync")
    n1, n4 = inproc.nodes["n1"], inproc.nodes["n4"]
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    replicas = [inproc.nodes[n] for n in inproc.replicas(key)]
    network = inproc.network

    # n4 cut off from every replica: a `one` increment is kept as a hint (sync: on its disk)
    network.partition([n4.address], [n.address for n in replicas])
    await eventually(
        lambda: not any(n4.parts.pool.reachable(n.address) for n in replicas),
        "n4's links to the replicas dead",
    )
    (hinted,) = await n4.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "one")
    assert hinted.ok and hinted.hinted, hinted
    held = dict(await n4.durable.load({n4.cluster.shard_of(key)}))
    assert held[key].value() == 5  # acknowledged and durable

    # The network heals, but n4's hand-over pushes keep failing for a while; n4 leaves.
    network.heal()
    network.drop(1.0, src=n4.address, kinds=[wire.PUSH])
    n1.cluster.apply("n4", "leave")
    await eventually(
        lambda: "n4" not in n4.cluster.state.nodes() and "n4" not in n1.cluster.state.nodes(),
        "n4's leave completed",
        timeout=10.0,
        show=inproc.describe,
    )
    assert n4.value(key) == 5  # kept: its pushes were lost

    # n4 is restarted (a deploy, a crash) before its hand-over got through
    await inproc.kill(n4)
    network.heal()
    back = await inproc.restart(n4)

    shard = back.cluster.shard_of(key)
    await eventually(
        lambda: all(n.value(key) == 5 for n in replicas),
        f"{key} = 5 on its replicas",
        timeout=8.0,
        show=lambda: (
            {n.node_id: n.value(key) for n in replicas},
            f"n4 holds {back.value(key)} in memory, status {back.cluster.status_of('n4')}, "
            f"recovered={back.cluster.recovered}",
        ),
    )

    async def forgotten() -> bool:  # once handed over
        return shard not in await back.durable.stored_shards()

    await eventually(forgotten, "the handed-over shard forgotten on n4's disk", timeout=8.0)

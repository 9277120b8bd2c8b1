"""A replica that is down when a node recovers is skipped (noted in `missed`, pulled from
later): the node becomes ready without it. A replica that is up but cannot load its durable
copy (a broken disk, an unreadable file) refuses PULL (SourceLoading) for as long as that
lasts; it is waited for as long as a silent node takes to be called down, then skipped the
same way, so one node's bad disk does not keep the others from recovering.
"""

from __future__ import annotations

from node.storage.durable import DurableError
from tests.inprocess.cluster import InProcessCluster, eventually


async def _whole_cluster_restart(inproc: InProcessCluster, broken: str) -> None:
    nodes = await inproc.start(3)
    for node in nodes:
        await inproc.kill(node)
    bad = await inproc.restart(inproc.nodes[broken])

    async def unreadable(shards: object) -> int:
        raise DurableError("disk I/O error")

    bad.parts.persister.load = unreadable  # type: ignore[method-assign]
    for node_id in ("n1", "n2", "n3"):
        if node_id != broken:
            await inproc.restart(inproc.nodes[node_id])


async def test_control_a_replica_down_does_not_keep_the_others_from_ready(
    inproc: InProcessCluster,
):
    nodes = await inproc.start(3)
    for node in nodes:
        await inproc.kill(node)
    n1 = await inproc.restart(inproc.nodes["n1"])
    await inproc.restart(inproc.nodes["n3"])  # n2 stays down
    await eventually(lambda: n1.cluster.ready, "n1 ready", timeout=8.0, show=inproc.describe)


async def test_a_replica_that_cannot_load_its_copy_does_not_keep_the_others_from_ready(
    inproc: InProcessCluster,
):
    await _whole_cluster_restart(inproc, broken="n2")
    n1, n3 = inproc.nodes["n1"], inproc.nodes["n3"]
    await eventually(
        lambda: n1.cluster.recovered and n3.cluster.recovered,
        "n1 and n3 recovered while n2 cannot read its disk",
        timeout=8.0,
        show=lambda: (
            inproc.describe()
            + f"\nn1 recovered={n1.cluster.recovered} missed={n1.parts.handoff.missed}"
            + f"\nn3 recovered={n3.cluster.recovered} missed={n3.parts.handoff.missed}"
        ),
    )

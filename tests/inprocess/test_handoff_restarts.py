"""Membership decisions outlive a restart: a leaving node goes on leaving, and a node an
operator force-removed does not rejoin by itself (it is admitted again, by an operator)."""

from __future__ import annotations

from node.cluster import wire
from ring import Status
from tests.inprocess.cluster import InProcessCluster, eventually, member_status


async def test_a_restarted_leaving_node_remembers_its_leave(inproc: InProcessCluster):
    n1, *_, n4 = await inproc.start(4)
    n4.cluster.apply("n4", "leave")  # what DELETE /admin/nodes/n4 on n4 does
    await inproc.kill(n4)  # before anyone heard of it

    back = await inproc.restart(n4)

    assert member_status(back, "n4") == Status.LEAVING  # from its start, not after gossip
    await eventually(
        lambda: "n4" not in n1.cluster.state.nodes() and member_status(n1, "n4") == Status.REMOVED,
        "n4's leave completed",
        timeout=10.0,
        show=inproc.describe,
    )


async def test_a_force_removed_node_does_not_rejoin_when_restarted(inproc: InProcessCluster):
    n1, *_, n4 = await inproc.start(4)
    await inproc.kill(n4)
    n1.cluster.apply("n4", "remove")  # DELETE /admin/nodes/n4?force=true
    await eventually(
        lambda: all(
            "n4" not in node.cluster.state.nodes() and member_status(node, "n4") == Status.REMOVED
            for node in inproc.live()
        ),
        "n4 removed everywhere",
        timeout=10.0,
        show=inproc.describe,
    )

    back = await inproc.restart(n4)
    sent = inproc.network.sent[wire.GOSSIP]
    await eventually(lambda: inproc.network.sent[wire.GOSSIP] > sent + 40, "gossip rounds")

    assert member_status(back, "n4") == Status.REMOVED
    assert not back.cluster.ready
    for node in inproc.live():
        assert member_status(node, "n4") == Status.REMOVED, inproc.describe()
        assert "n4" not in node.cluster.state.nodes(), inproc.describe()


async def test_a_removed_node_comes_back_when_an_operator_admits_it(inproc: InProcessCluster):
    n1, *_, n4 = await inproc.start(4)
    await inproc.kill(n4)
    n1.cluster.apply("n4", "remove")
    await eventually(lambda: "n4" not in n1.cluster.state.nodes(), "n4 out of the ring")
    back = await inproc.restart(n4)
    await eventually(lambda: member_status(back, "n4") == Status.REMOVED, "n4 knows it left")

    await inproc.admit(n1, back)  # POST /admin/nodes {address}

    await inproc.settled(timeout=10.0)
    assert "n4" in n1.cluster.state.current.nodes

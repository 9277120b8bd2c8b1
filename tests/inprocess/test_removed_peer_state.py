"""A peer removed from the ring leaves nothing behind in its former peers' anti-entropy:
what each node keeps per peer (its last digest total, its turn for full digests, its
deferred shards) goes at the next ring change, instead of staying for the node's life."""

from __future__ import annotations

from ring import Status
from tests.inprocess.cluster import InProcessCluster, Node, eventually, member_status


def _kept(node: Node, peer: str) -> list[bool]:
    ae = node.parts.gossip.anti_entropy
    return [peer in kept for kept in (ae.totals, ae._unsent, ae._deferred)]


async def test_a_removed_peer_leaves_no_anti_entropy_state(inproc: InProcessCluster) -> None:
    n1, *_, n4 = await inproc.start(4)
    await eventually(lambda: _kept(n1, "n4")[:2] == [True, True], "n1 exchanged with n4")
    await inproc.kill(n4)
    n1.cluster.apply("n4", "remove")  # DELETE /admin/nodes/n4?force=true
    await eventually(
        lambda: all(member_status(node, "n4") == Status.REMOVED for node in inproc.live()),
        "n4 removed everywhere",
        timeout=10.0,
        show=inproc.describe,
    )
    await eventually(
        lambda: not any(any(_kept(node, "n4")) for node in inproc.live()),
        "n4's anti-entropy state dropped",
        timeout=5.0,
        show=inproc.describe,
    )

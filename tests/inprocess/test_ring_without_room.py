"""A member the ring has no room for (Q x N replicas already placed) waits to join, and
the claimant goes on with everything else. Ring.with_node raises RingError then; the
claimant derived the join without checking, so its gossip round raised every round before
the hand-off step: it neither recovered, pulled nor handed over any more, and restarted, it
never became ready again.
"""

from __future__ import annotations

import asyncio

from tests.inprocess.cluster import InProcessCluster, eventually


async def test_a_join_beyond_the_rings_capacity_does_not_stop_other_changes(
    inproc: InProcessCluster,
):
    n1, _ = await inproc.start(2, shards=2, replicas=1, write_quorum=1, read_quorum=1)
    await inproc.launch("n3")  # a third node seeded with the cluster: 2 x 1 replicas, no room
    await eventually(lambda: n1.cluster.view.get("n3") is not None, "n1 heard of n3")

    await asyncio.sleep(0.5)  # ten gossip intervals: n1, the claimant, derives the join

    await inproc.kill(n1)
    back = await inproc.restart(n1)  # a deploy, a crash: still the claimant (smallest id)
    await eventually(
        lambda: back.cluster.ready, "n1 ready again", timeout=8.0, show=inproc.describe
    )

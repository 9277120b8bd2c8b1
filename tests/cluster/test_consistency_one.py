"""consistency=one: an acknowledged increment is on its way to the other replicas at once.

The contract (README "Contracts"): `one` answers once the coordinator applied the increment
and handed it to its peer links, which send it in the next frame (group commit), not at
the next write-behind flush or gossip round. So a coordinator killed (kill -9) right after
its 200s loses none of them: the other replicas hold every acknowledged increment, within
the time the links take to deliver a frame.
"""

from __future__ import annotations

import asyncio

from tests.cluster.harness import Cluster, eventually

NS = "one"
NAMES = [f"k{i}" for i in range(20)]


async def test_acknowledged_one_writes_survive_a_kill_of_their_coordinator_right_after(
    cluster: Cluster,
):
    # A long write-behind interval: were `one` to wait for a flush, everything would be lost.
    cluster.settings.update(COUNTERS_PERSIST_INTERVAL_S="30")
    nodes = await cluster.start(3)  # N = 3: every node is a replica, each coordinates itself
    coordinator, others = nodes[0], nodes[1:]
    for attempt in range(3):  # three bursts, each ended by a kill -9 right after the 200s
        replies = await asyncio.gather(
            *(
                cluster.increment(coordinator, NS, name, attempt + 1, consistency="one")
                for name in NAMES
            )
        )
        coordinator.kill()
        for status, body in replies:
            assert status == 200 and body["value"] >= attempt + 1, body
        expected = {name: sum(range(1, attempt + 2)) for name in NAMES}
        # The survivors hold it (one of them may hold a key only until anti-entropy copies
        # it to the other), and the dead node cannot repair anything any more.
        await cluster.converged(NS, expected, others)
        coordinator.start(cluster.seeds())
        await cluster.wait_ready(coordinator)
        await cluster.converged(NS, expected, nodes)


async def test_a_one_write_reply_says_what_it_promised(cluster: Cluster):
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "said", 1, consistency="one")
    assert status == 200, body
    assert body["consistency"] == "one" and body["replicas"] == 1, body
    status, body = await cluster.increment(nodes[0], NS, "said", 1)
    assert status == 200 and body["consistency"] == "quorum" and body["replicas"] == 2, body

    async def everywhere() -> bool:
        return all([await cluster.value(node, NS, "said") == 2 for node in nodes])

    await eventually(everywhere, "every replica to hold both writes", 10)

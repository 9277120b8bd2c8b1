"""A node recovering after a whole-cluster restart waits for every live replica's whole
state: a peer still loading its durable copy refuses PULL (handoff.SourceLoading) rather than
answer from memory it has not filled yet.

After a whole-cluster restart a slot may be on one node's disk alone (a write newer than
the other replicas' last flush; with a shared Redis, the slot-owner rule). Had the loading
peer answered, the puller would have counted the empty answer as that peer's state, said
ready, and a quorum read through it would miss an increment acknowledged (sync: on disk)
before the restart, while the loading peer still counts as joining and no read asks it.
"""

from __future__ import annotations

import asyncio

from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_a_node_is_not_ready_on_a_pull_from_a_peer_still_loading(
    inproc: InProcessCluster,
):
    nodes = await inproc.start(3, durability="sync", failure_timeout_s=3.0)  # waits 6 s
    key = inproc.key_where(lambda replicas: replicas[0] == "n2")  # n2's slot counts it
    n2 = inproc.nodes["n2"]
    (written,) = await n2.coordinator.run([Op(OpKind.INCREMENT, key, 7)], "quorum")
    assert written.ok, written
    held = dict(await n2.durable.load({n2.cluster.shard_of(key)}))
    assert held[key].value() == 7  # acknowledged, and on n2's disk

    for node in nodes:  # a whole-cluster restart (power loss, a deploy of every node)
        await inproc.kill(node)

    gate = asyncio.Event()  # n2's load of its durable copy takes a while
    slow = await inproc.restart(n2)
    load = slow.parts.handoff._load

    async def slow_load(shards: frozenset[int]) -> bool:
        await gate.wait()
        return await load(shards)

    slow.parts.handoff._load = slow_load  # type: ignore[method-assign]
    n1 = await inproc.restart(inproc.nodes["n1"])
    await inproc.restart(inproc.nodes["n3"])
    try:
        await asyncio.sleep(2.0)  # many recovery rounds: n1 pulls from n2 and is refused
        assert not n1.cluster.ready, "n1 says ready while n2 has not loaded its slots"
    finally:
        gate.set()
    await eventually(lambda: n1.cluster.ready, "n1 ready", timeout=10.0, show=inproc.describe)
    (read,) = await n1.coordinator.run([Op(OpKind.GET, key)], "quorum")
    assert read.ok and read.value == 7, (
        f"a quorum read of {key} through n1 answers {read}; "
        f"n1's pulls that skipped a replica: {n1.parts.handoff.missed}"
    )

"""Hand-off under failure: a node joins, and a replica it is pulling from dies mid-join.

Writers keep incrementing through nodes that stay up. The join must complete once the dead
node is marked down (the joiner pulls from the replicas still alive), and afterwards every
replica, the joiner and the restarted victim included, holds a total between the
acknowledged increments and those plus the ones whose outcome was unknown: no acknowledged
increment is lost, none counts twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from node.base.errors import QuorumTimeout, QuorumUnavailable
from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

KEYS: list[Key] = [("t", "ns", f"joined{i}") for i in range(12)]


@dataclass
class Tally:
    acknowledged: int = 0
    unknown: int = 0  # failed, but may have applied
    refused: int = 0  # failed and said nothing applied


async def _write(nodes: list[Node], tallies: dict[Key, Tally], stop: asyncio.Event) -> None:
    """Quorum increments of 1 round robin over keys and the given entry nodes until stopped."""
    i = 0
    while not stop.is_set():
        node, key = nodes[i % len(nodes)], KEYS[i % len(KEYS)]
        i += 1
        tally = tallies[key]
        try:
            (result,) = await node.coordinator.run([Op(OpKind.INCREMENT, key, 1)], "quorum")
        except (QuorumTimeout, QuorumUnavailable) as error:
            may_have = error.extra["may_have_applied"]
        else:
            if result.ok:
                tally.acknowledged += 1
                await asyncio.sleep(0.002)  # pace the writers; not a synchronisation
                continue
            assert result.problem is not None
            may_have = result.problem["may_have_applied"]
        if may_have:
            tally.unknown += 1
        else:
            tally.refused += 1


async def test_a_join_whose_source_dies_mid_pull_completes_and_loses_nothing(
    inproc: InProcessCluster,
):
    n1, n2, n3 = await inproc.start(3)
    tallies = {key: Tally() for key in KEYS}
    stop = asyncio.Event()
    writers = asyncio.ensure_future(_write([n1, n3], tallies, stop))
    try:
        await eventually(lambda: sum(t.acknowledged for t in tallies.values()) > 50, "writes")

        joiner = await inproc.launch("n4", seeds=())
        await eventually(lambda: joiner.cluster.ready, "n4 up on its own")
        network = inproc.network
        network.delay(0.1, 0.1, src=joiner.address, kinds=[wire.PULL])  # pulls take a while
        await inproc.admit(n1, joiner)
        await eventually(
            lambda: network.in_flight[(joiner.address, n2.address, wire.PULL)] > 0,
            "n4 pulling from n2",
            show=inproc.describe,
        )
        await inproc.kill(n2)

        await inproc.settled(timeout=10.0)  # n1, n3, n4: the join completed without n2
        assert "n4" in n1.cluster.state.current.nodes
        victim = await inproc.restart(n2)
        assert victim.cluster.actor != n2.cluster.actor  # a new incarnation
        await inproc.settled(timeout=10.0)
    finally:
        stop.set()
        await writers

    assert sum(t.acknowledged for t in tallies.values()) > 100
    for key, tally in tallies.items():
        holders = [inproc.nodes[n] for n in inproc.replicas(key)]

        def agreed(key: Key = key, tally: Tally = tally, holders: list[Node] = holders) -> bool:
            values = {node.value(key) for node in holders}
            return len(values) == 1 and (
                tally.acknowledged <= (values.pop() or 0) <= tally.acknowledged + tally.unknown
            )

        await eventually(
            agreed,
            f"{key}: replicas agree on a total in [{tally.acknowledged}, "
            f"{tally.acknowledged + tally.unknown}]",
            show=lambda key=key, holders=holders: {n.node_id: n.value(key) for n in holders},
        )

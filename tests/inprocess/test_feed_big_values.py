"""A counter whose exact value left int64 still reaches change-feed streams on every node.

Two replicas cut off from each other each accept increments toward a bound; healed, the
counter merges to an exact value past int64 (tests/inprocess/test_int64_edges.py), and its
shard's coordinator publishes that value. A stream on another node reads the coordinator's
log over an EVENTS peer message (node/realtime/reader.py, feed_wire.py): that read must
answer with the event, upward (a uint64) and downward (below what msgpack carries at all),
or the stream stops hearing from that node for the whole namespace.
"""

from __future__ import annotations

import pytest

from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("delta", [INT64_MAX - 10, -INT64_MAX + 10], ids=["up", "down"])
async def test_an_event_past_int64_is_read_from_the_coordinator_by_other_nodes(
    inproc: InProcessCluster, delta: int
) -> None:
    await inproc.start(3)
    key = ("t", "ns", "edge")
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.partition([first.address], [second.address])
    for node in (first, second):
        [result] = await node.coordinator.run(
            [Op(OpKind.INCREMENT, key, delta, "")], "one", fingerprint=f"+{delta}"
        )
        assert result.value == delta, result
    inproc.network.heal()
    await inproc.converged(key, 2 * delta)
    coordinator_id = first.cluster.coordinator(first.cluster.shard_of(key))
    assert coordinator_id is not None
    coordinator = inproc.nodes[coordinator_id]

    def published() -> bool:
        read = coordinator.parts.feed.log.read(("t", "ns"), "", 0, 100)
        return any(event.value == 2 * delta for event in read.events)

    await eventually(published, "the coordinator published the merged value", 5)
    for other in inproc.live():
        if other is coordinator:
            continue
        reads = await other.parts.feed.reader.read(("t", "ns"), "", {coordinator.node_id: 0})
        assert coordinator.node_id in reads, f"{other.node_id} could not read the event"
        assert [e.value for e in reads[coordinator.node_id].events][-1] == 2 * delta
    # no server raised while answering (the fixture's teardown checks it again)
    assert not inproc.network.errors, inproc.network.errors

"""Lost, duplicated and reordered replication messages: replicas still reach exact totals.

Replication frames (SLOTS, REPLICATE, READ and their replies) are dropped, duplicated and
delayed at random; gossip is not. Anti-entropy alone must bring every replica to the sum of
the increments that applied, with the faults still on, and duplicates must never count twice.
"""

from __future__ import annotations

import asyncio

from node.base.errors import QuorumTimeout, QuorumUnavailable
from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually
from tests.inprocess.network import REPLICATION_KINDS


def _keys(count: int) -> list[Key]:
    return [("t", "ns", f"hot{i}") for i in range(count)]


async def _increments(
    nodes: list[Node], keys: list[Key], consistency: str
) -> tuple[dict[Key, int], int]:
    """Deltas 1, 2, 3, ... round robin over nodes and keys, all at once: the sum per key (all
    of them apply, since at worst a quorum times out after the coordinator applied), and how
    many were not acknowledged."""
    ops = [(nodes[i % len(nodes)], keys[i % len(keys)], i + 1) for i in range(len(keys) * 6)]

    async def one(node: Node, key: Key, delta: int) -> bool:
        try:
            (result,) = await node.coordinator.run([Op(OpKind.INCREMENT, key, delta)], consistency)
        except (QuorumTimeout, QuorumUnavailable) as error:
            assert error.extra["may_have_applied"] is True, error
            return False
        assert result.ok, result
        return True

    acknowledged = await asyncio.gather(*(one(*op) for op in ops))
    totals = dict.fromkeys(keys, 0)
    for _, key, delta in ops:
        totals[key] += delta
    return totals, acknowledged.count(False)


async def test_dropped_and_duplicated_replication_converges_by_anti_entropy(
    inproc: InProcessCluster,
):
    nodes = await inproc.start(3)
    network = inproc.network
    network.drop(0.4, kinds=REPLICATION_KINDS)
    network.duplicate(0.4, kinds=REPLICATION_KINDS)
    network.delay(0.0, 0.02, kinds=REPLICATION_KINDS)
    keys = _keys(8)
    await inproc.pause_gossip()  # first let the write path do all it will do

    # A wave of writes travels in a few group-committed frames (one per node and peer), so
    # all of them get through 40% loss about one time in twenty: waves until one did not.
    totals = dict.fromkeys(keys, 0)
    for _ in range(5):
        wave, unacknowledged = await _increments(nodes, keys, "one")
        assert unacknowledged == 0
        totals = {key: totals[key] + wave[key] for key in keys}
        await eventually(
            lambda: not any(node.parts.pool.backlog() for node in nodes), "replication settled"
        )
        if any(node.value(key) != totals[key] for node in nodes for key in keys):
            break
    assert network.dropped[wire.SLOTS] > 0 and network.duplicated[wire.SLOTS] > 0
    assert any(node.value(key) != totals[key] for node in nodes for key in keys), (
        "the faults left no replica behind, so this test would not test anti-entropy"
    )
    inproc.resume_gossip()
    for key in keys:
        await inproc.converged(key, totals[key], nodes)


async def test_quorum_writes_that_time_out_under_loss_still_apply_exactly_once(
    inproc: InProcessCluster,
):
    nodes = await inproc.start(3)
    network = inproc.network
    network.drop(0.5, kinds=REPLICATION_KINDS)
    network.duplicate(0.5, kinds=REPLICATION_KINDS)
    keys = _keys(3)

    totals, unacknowledged = await _increments(nodes, keys, "quorum")
    assert unacknowledged > 0, "no write timed out, so this test would not test them"
    network.heal()
    for key in keys:
        await inproc.converged(key, totals[key], nodes)
        (read,) = await nodes[0].coordinator.run([Op(OpKind.GET, key)], "all")
        assert read.value == totals[key]

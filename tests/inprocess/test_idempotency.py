"""Concurrent retries with one Idempotency-Key: applied once, every attempt answers the same.

A client that times out retries, possibly at another node, while its first attempt is still
running. Both attempts carry the same key and request fingerprint; the counter must move
once, and both must answer the value after that one increment (one of them as a replay).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from node.cluster import wire
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node, eventually

FINGERPRINT = "POST /v1/counters/ns/k +5"


def _attempt(node: Node, key: tuple[str, str, str]) -> asyncio.Future[list[OpResult]]:
    op = Op(OpKind.INCREMENT, key, 5, idem="retry-1")
    return asyncio.ensure_future(node.coordinator.run([op], "quorum", fingerprint=FINGERPRINT))


def _applied_once(results: Sequence[list[OpResult]]) -> None:
    flat = [result for answer in results for result in answer]
    assert [result.value for result in flat] == [5] * len(flat), flat
    assert sorted(result.replayed for result in flat) == [False] + [True] * (len(flat) - 1)


async def test_two_concurrent_retries_on_one_node_apply_once(inproc: InProcessCluster):
    await inproc.start(3)
    key = ("t", "ns", "k")
    coordinator = inproc.nodes[inproc.replicas(key)[0]]

    _applied_once(await asyncio.gather(_attempt(coordinator, key), _attempt(coordinator, key)))

    await inproc.converged(key, 5)
    assert coordinator.coordinator.idempotent.hits == 1


async def test_two_concurrent_retries_on_different_nodes_apply_once(inproc: InProcessCluster):
    await inproc.start(3)
    key = ("t", "ns", "k")
    first, second, third = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.delay(0.0, 0.03, kinds=[wire.FORWARD])  # arrivals in either order

    _applied_once(
        await asyncio.gather(_attempt(second, key), _attempt(third, key), _attempt(first, key))
    )

    await inproc.converged(key, 5)


async def test_a_duplicated_forward_applies_once(inproc: InProcessCluster):
    await inproc.start(3)
    key = ("t", "ns", "k")
    entry = inproc.nodes[inproc.replicas(key)[1]]
    inproc.network.duplicate(1.0, kinds=[wire.FORWARD])

    (result,) = await _attempt(entry, key)

    assert (result.value, result.replayed) == (5, False)
    assert inproc.network.duplicated[wire.FORWARD] == 1
    await inproc.converged(key, 5)
    # the copy was answered from the receipt, not applied again
    await _until_hits(inproc.nodes[inproc.replicas(key)[0]], 1)


async def test_a_retry_after_the_reply_was_lost_is_answered_from_the_receipt(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "k")
    owner, entry, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    # the first attempt applies on the owner; only its answer to the entry node is lost
    inproc.network.drop(1.0, src=owner.address, dst=entry.address, kinds=[wire.FORWARD])

    (lost,) = await _attempt(entry, key)
    assert lost.problem is not None and lost.problem["may_have_applied"] is True
    inproc.network.heal()
    (retry,) = await _attempt(entry, key)

    assert (retry.value, retry.replayed) == (5, True)
    await inproc.converged(key, 5)


async def _until_hits(node: Node, hits: int) -> None:
    idempotent = node.coordinator.idempotent
    await eventually(lambda: idempotent.hits == hits, f"{hits} replay(s) on {node.node_id}")

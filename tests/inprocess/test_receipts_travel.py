"""Receipts travel wherever state travels, and a replay answers 200 only once W hold it.

A receipt that stays on the nodes that saw the write is lost with them: after the old
replicas of a shard leave, or when a replica missed the write and the others go, a retry
would apply the increment again. And a receipt records an attempt, not an acknowledgement:
the first attempt may have reached fewer than W replicas, so its replay must not say 200
before W hold the increment.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from node.base.keys import Key
from node.cluster import handoff, wire
from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node, eventually

IDEM = "retry-1"
FINGERPRINT = "POST /v1/counters/ns/k +5"


async def _attempt(node: Node, key: Key) -> OpResult:
    op = Op(OpKind.INCREMENT, key, 5, idem=IDEM)
    (result,) = await node.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)
    return result


def _holds_receipt(node: Node, key: Key) -> bool:
    return node.store.receipt(key, IDEM, int(time.time() * 1000)) is not None


async def test_a_replica_that_missed_a_keyed_write_gets_its_receipt_from_anti_entropy(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "k")
    owner, _, missed = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.drop(1.0, src=owner.address, dst=missed.address, kinds=[wire.REPLICATE])

    first = await _attempt(owner, key)
    assert (first.value, first.replayed) == (5, False)
    assert not _holds_receipt(missed, key)
    inproc.network.heal()

    await inproc.converged(key, 5)  # anti-entropy brought the state...
    await eventually(lambda: _holds_receipt(missed, key), "the receipt beside it on the replica")


async def _join(inproc: InProcessCluster, via: Node, node_id: str) -> Node:
    joiner = await inproc.launch(node_id, seeds=())
    await eventually(lambda: joiner.cluster.ready, f"{node_id} up on its own")
    # via's gossip round closes links to addresses that are not members yet, which could
    # cut the admitting call short; paused, it cannot until the joiner is in its view
    await inproc.pause_gossip([via])
    try:
        await inproc.admit(via, joiner)
    finally:
        inproc.resume_gossip([via])
    return joiner


async def _replace_every_node(inproc: InProcessCluster, old: list[Node]) -> list[Node]:
    """n4, n5, n6 join, then every old node leaves and is killed once the ring has switched:
    what the new nodes hold came to them only by hand-off pulls (and anti-entropy)."""
    new = [await _join(inproc, old[0], node_id) for node_id in ("n4", "n5", "n6")]
    await inproc.settled(timeout=15.0)
    for leaver in old:
        new[0].cluster.apply(leaver.node_id, "leave")
    new_ids = {node.node_id for node in new}

    def switched() -> bool:
        return all(
            set(node.cluster.state.current.nodes) == new_ids and node.cluster.state.pending is None
            for node in new
        )

    await eventually(switched, "a ring of n4, n5, n6 only", 15.0, inproc.describe)
    for leaver in old:
        await inproc.kill(leaver)
    return new


async def test_a_retry_after_every_old_replica_left_replays(inproc: InProcessCluster):
    old = await inproc.start(3)
    key = ("t", "ns", "k")
    first = await _attempt(old[0], key)
    assert (first.value, first.replayed) == (5, False)
    await inproc.converged(key, 5)

    new = await _replace_every_node(inproc, old)
    await inproc.converged(key, 5, nodes=new)
    retry = await _attempt(new[0], key)

    assert (retry.value, retry.replayed) == (5, True), retry
    await asyncio.sleep(0.2)  # a double apply would show now; not a synchronisation
    assert {node.value(key) for node in new} == {5}


async def test_every_receipt_moves_with_its_shard_however_many_pages_it_takes(
    inproc: InProcessCluster, monkeypatch: pytest.MonkeyPatch
):
    """A pull reply holds half a frame of receipts; past it the receipts come in pages (here
    two a page), through the whole paged PULL path. Before pages, a pull left the oldest out
    (test_pull_reply.py), and only anti-entropy with an old replica still alive could bring
    them: a retry of one of those after the old replicas went applied again."""
    monkeypatch.setattr(handoff, "PULL_RECEIPT_BYTES", 100)
    old = await inproc.start(3)
    key = ("t", "ns", "k")
    ops = [Op(OpKind.INCREMENT, key, 1, idem=f"key-{i}") for i in range(6)]
    for op in ops:
        (first,) = await old[0].coordinator.run([op], "quorum", fingerprint=op.idem)
        assert first.ok and not first.replayed, first
    await inproc.converged(key, 6)

    new = await _replace_every_node(inproc, old)
    for op in ops:
        (retry,) = await new[0].coordinator.run([op], "quorum", fingerprint=op.idem)
        assert retry.replayed and retry.value is not None, (op.idem, retry)
    await asyncio.sleep(0.2)  # a double apply would show now; not a synchronisation
    assert {node.value(key) for node in new} == {6}


async def test_a_puller_takes_the_one_reply_of_a_source_before_pages(
    inproc: InProcessCluster,
):
    """A rolling upgrade: a source of the version before pages answers a PULL with a list of
    entries, not a page. Before, the puller unpacked that list as (entries, cursor): a
    ValueError that aborted every hand-off round, so the joiner never caught up."""
    old = await inproc.start(3)
    keys = [("t", "ns", f"k{i}") for i in range(40)]
    results = await old[0].coordinator.run([Op(OpKind.INCREMENT, k, 1) for k in keys], "all")
    assert all(result.ok for result in results)
    inproc.network.tamper(wire.PULL, lambda page: page["entries"])  # as the old version did

    joiner = await _join(inproc, old[0], "n4")

    await inproc.settled(timeout=15.0)
    held = [key for key in keys if "n4" in inproc.replicas(key)]
    assert held and all(joiner.value(key) == 1 for key in held)


async def test_a_batch_claim_without_state_moves_with_its_shard(inproc: InProcessCluster):
    """A batch's claim is a receipt on a counter that has no state: a pull must carry it too,
    or a different batch under the same key would apply on the new replicas."""
    old = await inproc.start(3)
    claim = Op(OpKind.CLAIM, claim_key("t", "batch-1"), 0, "batch-1")
    (claimed,) = await old[0].coordinator.run([claim], "quorum", fingerprint="batch A")
    assert claimed.ok and not claimed.replayed

    new = await _replace_every_node(inproc, old)
    (same,) = await new[1].coordinator.run([claim], "quorum", fingerprint="batch A")
    (other,) = await new[2].coordinator.run([claim], "quorum", fingerprint="batch B")

    assert same.ok and same.replayed, same
    assert other.problem is not None and other.problem["status"] == 422, other


async def test_a_replay_answers_200_only_once_a_write_quorum_holds_it(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "k")
    owner, *others = (inproc.nodes[n] for n in inproc.replicas(key))
    await inproc.pause_gossip()  # no anti-entropy: only the replay itself may spread it
    inproc.network.drop(1.0, src=owner.address, kinds=[wire.REPLICATE])

    first = await _attempt(owner, key)  # applied on the owner only
    assert first.problem is not None and first.problem["may_have_applied"] is True
    cut_off = await _attempt(owner, key)  # still only one replica holds it: not a 200

    assert cut_off.problem is not None, cut_off
    assert cut_off.problem["status"] in (503, 504) and cut_off.problem["may_have_applied"]
    assert not any(_holds_receipt(node, key) for node in others)

    inproc.network.heal()
    replayed = await _attempt(owner, key)

    assert (replayed.value, replayed.replayed) == (5, True), replayed
    holders = [node for node in others if _holds_receipt(node, key) and node.value(key) == 5]
    assert len(holders) >= 1  # with the owner, W = 2 held it when the 200 was sent
    assert owner.value(key) == 5  # a replay never applies again
    inproc.resume_gossip()
    await inproc.converged(key, 5)

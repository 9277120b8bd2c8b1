"""Fencing across restarts (issue 11): a replica's grant of an Idempotency-Key survives its
restart (kill, data dir kept), and a coordinator killed during its write-behind flush never
comes back with an increment but without its receipt.

The seeded network plays the faults; each node's durable replica is SQLite in its data dir.
"""

from __future__ import annotations

import sqlite3
import time

from node.cluster import wire
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node, eventually

FINGERPRINT = "POST /v1/namespaces/ns/counters/k/increment +5"
REPLICATION = [wire.SLOTS, wire.REPLICATE, wire.PUSH, wire.PULL]


async def _attempt(node: Node, key: tuple[str, str, str], idem: str = "order-1") -> OpResult:
    op = Op(OpKind.INCREMENT, key, 5, idem=idem)
    (result,) = await node.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)
    return result


def _db(node: Node) -> sqlite3.Connection:
    return sqlite3.connect(node.parts.config.data_path / "counters.sqlite3")


async def test_a_grant_survives_the_restart_of_the_replica_that_gave_it(
    inproc: InProcessCluster,
):
    """The first attempt holds grants from itself and the second replica (the third never
    hears of it), applies, and its write never leaves it; it is cut off. The second replica
    restarts. A retry on it must still meet the first attempt's reservation: in doubt while
    the holder is away, then the first attempt's receipt, never a second apply."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first, second, third = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.drop(1.0, src=first.address, dst=third.address, kinds=[wire.RESERVE])
    inproc.network.drop(1.0, src=first.address, kinds=REPLICATION)

    lost = await _attempt(first, key)

    assert lost.problem is not None and lost.problem["may_have_applied"] is True, lost
    now_ms = int(time.time() * 1000)
    assert second.store.reservations.reservation(key, "order-1", now_ms) is not None
    assert third.store.reservations.reservation(key, "order-1", now_ms) is None
    flushes = second.parts.persister.flushes
    await eventually(  # the grant's write-behind interval passes
        lambda: second.parts.persister.flushes > flushes + 1, "a flush on the second"
    )
    inproc.network.isolate(first.address)
    await inproc.kill(second)
    second = await inproc.restart(second)
    await eventually(
        lambda: first.node_id in second.cluster.down and first.node_id in third.cluster.down,
        f"{first.node_id} marked down",
    )
    await eventually(lambda: second.cluster.ready, "the second ready again")

    retry = await _attempt(second, key)

    assert retry.problem is not None, retry
    assert retry.problem["type"].endswith("/in-doubt"), retry
    assert second.value(key) in (None, 0)
    inproc.network.heal()
    await inproc.settled()
    again = await _attempt(second, key)
    assert (again.value, again.replayed) == (5, True), again
    await inproc.converged(key, 5, nodes=inproc.live())


async def test_a_coordinator_killed_mid_flush_never_keeps_the_slot_without_the_receipt(
    inproc: InProcessCluster,
):
    """The first attempt applies on its coordinator only (its write never leaves it); the
    coordinator's flush fails once it has written the counter's slot, before the receipt
    (a trigger refuses the receipt row), and the process is killed. Restarted, it must not
    hold the increment without the receipt: a retry would find no receipt anywhere ("void"),
    apply again, and the two slots would merge to a double."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first = inproc.nodes[inproc.replicas(key)[0]]
    with _db(first) as db:
        db.execute(
            "CREATE TRIGGER crash BEFORE INSERT ON receipt_packs"
            " BEGIN SELECT RAISE(ABORT, 'killed mid-flush'); END"
        )
    inproc.network.drop(1.0, src=first.address, kinds=REPLICATION)

    lost = await _attempt(first, key)

    assert lost.problem is not None and lost.problem["may_have_applied"] is True, lost
    failures = first.parts.persister.flush_failures
    await eventually(lambda: first.parts.persister.flush_failures > failures, "a flush that fails")
    await inproc.kill(first)
    with _db(first) as db:
        db.execute("DROP TRIGGER crash")
    inproc.network.heal()
    await inproc.restart(first)
    await inproc.settled()

    retry = await _attempt(inproc.nodes[inproc.replicas(key)[1]], key)

    assert retry.ok, retry
    await _same_everywhere(inproc, key)  # every slot of the key on every node
    assert {node.value(key) for node in inproc.live()} == {5}


async def _same_everywhere(inproc: InProcessCluster, key: tuple[str, str, str]) -> None:
    def same() -> bool:
        states = [node.store.get(key) for node in inproc.live()]
        return states[0] is not None and all(state == states[0] for state in states)

    await eventually(same, f"one state of {key} on every node")


async def test_a_grant_moves_with_its_shard_to_the_replica_that_takes_over(
    inproc: InProcessCluster,
):
    """Four nodes; a key on the first three. An attempt on the first replica holds the key
    at itself and the second (its reserve round is done; it has not applied yet). The
    second leaves and n4 takes its place. A retry on n4 must meet that reservation, which n4
    learnt from the PULL replies of the hand-off, and ask its holder to give it up (so the
    attempt can no longer apply) before it applies, even when n4 reserves without asking the
    holder (it believes it down): never two attempts that both apply."""
    old = await inproc.start(3)
    n4 = await _join(inproc, old[0], "n4")
    await inproc.settled(timeout=15.0)
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    first, second, third = (inproc.nodes[n] for n in inproc.replicas(key))
    fence = first.coordinator.idempotent.fence
    now_ms = int(time.time() * 1000)
    for node in (first, second):  # what the attempt's reserve round left behind
        grant = node.store.reservations.reserve(key, "order-1", first.node_id, fence.token, now_ms)
        assert grant is None

    third.cluster.apply(second.node_id, "leave")
    wanted = {first.node_id, third.node_id, n4.node_id}
    await eventually(
        lambda: all(
            set(node.cluster.state.current.nodes) == wanted and node.cluster.state.pending is None
            for node in (first, third, n4)
        ),
        "a ring without the second replica",
        15.0,
        inproc.describe,
    )
    await inproc.kill(second)
    assert set(inproc.replicas(key)) == wanted
    assert fence.holds(key, "order-1", now_ms)
    resolves = inproc.network.sent[wire.RESOLVE]
    # n4 believes the holder down, so it asks the third only: with it, a majority
    await inproc.pause_gossip([n4])
    n4.cluster.down = frozenset({first.node_id})
    op = Op(OpKind.INCREMENT, key, 5, idem="order-1")
    shard = n4.cluster.shard_of(key)

    retry = await n4.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)

    assert not fence.holds(key, "order-1", now_ms)  # the first attempt can no longer apply
    assert inproc.network.sent[wire.RESOLVE] > resolves
    assert (retry.value, retry.replayed) == (5, False), retry
    inproc.resume_gossip([n4])
    await inproc.converged(key, 5, nodes=inproc.live())


async def _join(inproc: InProcessCluster, via: Node, node_id: str) -> Node:
    joiner = await inproc.launch(node_id, seeds=())
    await eventually(lambda: joiner.cluster.ready, f"{node_id} up on its own")
    await inproc.pause_gossip([via])  # see tests/inprocess/test_receipts_travel.py
    try:
        await inproc.admit(via, joiner)
    finally:
        inproc.resume_gossip([via])
    return joiner

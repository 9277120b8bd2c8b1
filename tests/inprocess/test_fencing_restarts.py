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
            "CREATE TRIGGER crash BEFORE INSERT ON idempotency_receipts"
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

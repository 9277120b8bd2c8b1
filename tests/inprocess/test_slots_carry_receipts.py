"""A slot never leaves a node without the receipts that are not yet durable there (issue
11).

The coordinator X of a keyed increment applies it (slot and receipt in memory), its
REPLICATE never leaves it, and its flush fails (a trigger refuses the receipt row, so the
slot is not written either: they go in one transaction). A peer P then gets X's state in a
reply: to a READ, to a plain write (SLOTS), to another keyed op's RESERVE, or to an anti-
entropy PUSH; or in X's own next plain write. X is killed and restarted: it holds neither
the slot nor the receipt, and answers the retry's RESOLVE "void". The retry on P must not
apply the op again: without the receipt beside the slot P merged, every replica would answer
"no receipt" and the key would count twice. It replays (or answers 503 in doubt), and every
node counts the op once.

The seeded in-memory network plays the faults; each node's durable replica is SQLite.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from node.cluster import wire
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node, eventually

FINGERPRINT = "POST /v1/namespaces/ns/counters/k/increment +5"
REPLICATION = [wire.SLOTS, wire.REPLICATE, wire.PUSH, wire.PULL]
Key = tuple[str, str, str]


async def _keyed(node: Node, key: Key, idem: str = "order-1", delta: int = 5) -> OpResult:
    op = Op(OpKind.INCREMENT, key, delta, idem=idem)
    (result,) = await node.coordinator.run([op], "quorum", fingerprint=f"{FINGERPRINT} {idem}")
    return result


async def _read(peer: Node, x: Node, key: Key) -> None:
    (result,) = await peer.coordinator.run([Op(OpKind.GET, key)], "all")
    assert result.ok, result


async def _plain_write(peer: Node, x: Node, key: Key) -> None:
    (result,) = await peer.coordinator.run([Op(OpKind.INCREMENT, key, 1)], "all")
    assert result.ok, result


async def _other_keyed(peer: Node, x: Node, key: Key) -> None:
    result = await _keyed(peer, key, idem="order-2", delta=1)
    assert result.ok, result


async def _later_write_by_x(peer: Node, x: Node, key: Key) -> None:
    """X's next plain write sends X's whole slot (SLOTS), which counts the keyed op too."""
    (result,) = await x.coordinator.run([Op(OpKind.INCREMENT, key, 1)], "all")
    assert result.ok, result


async def _push(peer: Node, x: Node, key: Key) -> None:
    """P pushes its (older) state to X, as anti-entropy does; X answers the more it holds."""
    link = peer.parts.pool.link(x.address)
    entries = [(key, peer.store.get(key), {})]
    deadline = asyncio.get_running_loop().time() + 5
    await peer.parts.gossip.anti_entropy.push(link, entries, deadline)


PATHS: dict[str, tuple[Callable[[Node, Node, Key], Awaitable[None]], int]] = {
    "read reply": (_read, 6),
    "slots reply": (_plain_write, 7),
    "reserve reply": (_other_keyed, 7),
    "push reply": (_push, 6),
    "later write by x": (_later_write_by_x, 7),
}


def _db(node: Node) -> sqlite3.Connection:
    return sqlite3.connect(node.parts.config.data_path / "counters.sqlite3")


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_retry_after_the_coordinator_died_unflushed_never_counts_twice(
    inproc: InProcessCluster, path: str
):
    learn, expected = PATHS[path]
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    x, peer, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    (plain,) = await x.coordinator.run([Op(OpKind.INCREMENT, key, 1)], "all")
    assert plain.ok, plain  # every replica holds the counter (a push needs one to compare)
    await inproc.converged(key, 1)
    with _db(x) as db:
        db.execute(
            "CREATE TRIGGER crash BEFORE INSERT ON receipt_packs"
            " BEGIN SELECT RAISE(ABORT, 'killed before its flush'); END"
        )
    inproc.network.drop(1.0, src=x.address, kinds=REPLICATION)

    lost = await _keyed(x, key)

    assert lost.problem is not None and lost.problem["may_have_applied"] is True, lost
    assert peer.value(key) == 1  # X's write never reached it
    await inproc.pause_gossip()  # no anti-entropy of its own: P learns X's slot as told
    inproc.network.heal()
    await learn(peer, x, key)
    assert peer.value(key) == expected  # P merged X's slot from X's reply
    failures = x.parts.persister.flush_failures
    await eventually(lambda: x.parts.persister.flush_failures > failures, "a flush that fails")
    await inproc.kill(x)
    with _db(x) as db:
        db.execute("DROP TRIGGER crash")
    inproc.resume_gossip()
    await inproc.restart(x)
    await inproc.settled()

    retry = await _keyed(peer, key)

    if retry.ok:
        assert (retry.value, retry.replayed) == (6, True), retry
    else:
        assert retry.problem is not None and retry.problem["type"].endswith("/in-doubt"), retry
    await inproc.converged(key, expected, nodes=inproc.live())

"""Anti-entropy repairs idempotency receipts, not only counter states.

A replica that missed a keyed write can get the counter's state back from a later plain
write (the coordinator's slot value travels whole), and then every state digest matches
while the replica still lacks the receipt: a retry that lands there after the other
replicas are gone would apply again. Receipt digests over settled time buckets find it.
"""

from __future__ import annotations

import time

from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

IDEM = "retry-1"
KEY: Key = ("t", "ns", "k")
WINDOW_S = 4.0  # short, so receipts settle (receipt_digest.py) within a second or so


def _holds_receipt(node: Node) -> bool:
    return node.store.receipt(KEY, IDEM, int(time.time() * 1000)) is not None


async def test_a_receipt_missed_while_states_converged_by_later_writes_is_repaired(
    inproc: InProcessCluster,
):
    await inproc.start(3, idempotency_window_s=WINDOW_S)
    owner, other, missed = (inproc.nodes[n] for n in inproc.replicas(KEY))
    await inproc.pause_gossip()  # states must converge by the write path alone
    inproc.network.drop(1.0, dst=missed.address, kinds=[wire.REPLICATE])
    keyed = Op(OpKind.INCREMENT, KEY, 5, idem=IDEM)
    (result,) = await owner.coordinator.run([keyed], "quorum", fingerprint="POST +5")
    assert result.ok and not result.replayed, result
    # Once the receipt is durable on its coordinators, a plain write's slot travels without it
    # (before, every state they send carries it: test_slots_carry_receipts.py).
    await eventually(
        lambda: not owner.store.unflushed_receipts(KEY) and not other.store.unflushed_receipts(KEY),
        "the receipt flushed",
    )
    inproc.network.heal()
    (result,) = await owner.coordinator.run([Op(OpKind.INCREMENT, KEY, 1)], "all")
    assert result.ok, result
    await inproc.converged(KEY, 6)
    shard = owner.cluster.shard_of(KEY)
    assert owner.store.digest(shard) == missed.store.digest(shard)  # the states agree
    assert _holds_receipt(owner) and _holds_receipt(other) and not _holds_receipt(missed)

    inproc.resume_gossip()
    await eventually(
        lambda: _holds_receipt(missed), f"the receipt on {missed.node_id}", timeout=WINDOW_S
    )
    now_ms = int(time.time() * 1000)
    assert missed.store.receipts_of(KEY, now_ms) == owner.store.receipts_of(KEY, now_ms)

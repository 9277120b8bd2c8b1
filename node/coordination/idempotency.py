"""Exactly-once increments: an Idempotency-Key is applied once, whichever node gets the retry.

Every op carrying a key runs on its shard's first serving replica, one attempt per key at a
time. That node merges a read quorum's states and receipts (crdt/receipts.py) first; R + W > N
means it sees the receipt of any attempt that was acknowledged. With a receipt, it answers the
first result (or 422 if the request differs); without, it applies the op and replicates the
new slot together with the receipt to a write quorum, in one frame, so a receipt exists
wherever the increment does and outlives the node that wrote it.

A batch first claims its key on a counter of its own, so a different batch under a used key
is refused before any op applies; then each op runs under the key plus its index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from crdt import CounterOverflowError, PNCounter, receipts
from crdt.receipts import Receipt
from node.base.errors import CountersError, IdempotencyKeyReused, Overflow
from node.base.keys import Key
from node.cluster import wire
from node.cluster.membership import Cluster
from node.coordination.ops import Op, OpKind, OpResult
from node.coordination.quorum import QuorumWait
from node.coordination.quota import CounterQuota
from node.coordination.replication import Replicator
from node.storage.store import CounterStore

log = logging.getLogger("counters.idempotency")
CLAIMS_NAMESPACE = "#idempotency"  # '#' is not allowed in client names: no client can touch it


def claim_key(tenant: str, idempotency_key: str) -> Key:
    return (tenant, CLAIMS_NAMESPACE, idempotency_key)


class Idempotent:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        replicator: Replicator,
        quota: CounterQuota,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.replicator = replicator
        self.quota = quota
        self.window_ms = int(cluster.config.idempotency_window_s * 1000)
        self.hits = 0  # retries answered from a receipt, for metrics
        # (counter, idempotency key) -> [lock, attempts holding or waiting for it]
        self._locks: dict[tuple[Key, str], list[Any]] = {}

    async def run(self, op: Op, shard: int, consistency: str, fingerprint: str) -> OpResult:
        name = (op.key, op.idem)
        entry = self._locks.setdefault(name, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._run(op, shard, consistency, fingerprint)
        except CountersError as error:
            return OpResult.failed(error)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[name]

    async def _run(self, op: Op, shard: int, consistency: str, fingerprint: str) -> OpResult:
        store, replicator = self.store, self.replicator
        now_ms = int(time.time() * 1000)
        store.prune_receipts(op.key, now_ms, self.window_ms)
        receipt = store.receipt(op.key, op.idem) or await self._read(op, shard, consistency)
        if receipt is not None:
            if receipt.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for a different request; nothing applied",
                    may_have_applied=False,
                )
            self.hits += 1
            return OpResult(receipt.value, replayed=True)
        replicator.check_writable(shard, consistency)
        delta = PNCounter.empty()
        if op.kind is OpKind.INCREMENT:
            self.quota.admit(op.key)
            try:
                _, delta = store.increment(op.key, self.cluster.actor, op.delta)
            except CounterOverflowError as error:
                raise Overflow(str(error)) from None
        state = store.get(op.key) or PNCounter.empty()
        receipt = Receipt(now_ms, self.cluster.actor, fingerprint, state.value())
        store.add_receipts(op.key, {op.idem: receipt})
        # The new slot and the receipt travel in one entry, so a receipt exists wherever
        # the increment does.
        wait = QuorumWait("increment")
        replicator.write(
            wait, op.key, shard, delta, consistency, own_slot=False, receipts={op.idem: receipt}
        )
        await replicator.settle(wait, wrote=True)
        return OpResult(receipt.value)

    async def _read(self, op: Op, shard: int, consistency: str) -> Receipt | None:
        """Merge the states and receipts of a read quorum; the receipt, if any has one."""
        store = self.store
        now_ms = int(time.time() * 1000)

        def on_reply(reply: Any) -> None:
            try:
                if not isinstance(reply, list) or len(reply) != 2:
                    raise wire.ProtocolError("a receipt reply is [state, receipt]")
                state = wire.state_from_wire(reply[0])
                found = {} if reply[1] is None else wire.receipts_from_wire([[op.idem, reply[1]]])
            except wire.ProtocolError as error:
                log.warning("bad receipt reply: %s", error)
                return
            store.merge(op.key, state)
            # A peer may not have pruned yet: a receipt past the window no longer counts.
            store.add_receipts(op.key, receipts.prune(found, now_ms, self.window_ms))

        wait = QuorumWait("read")
        body = [list(op.key), op.idem]
        self.replicator.ask(wait, shard, consistency, wire.RECEIPT, body, on_reply)
        await wait.wait(self.replicator.timeout)
        return store.receipt(op.key, op.idem)

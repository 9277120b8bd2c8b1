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
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from crdt import CounterOverflowError, PNCounter, receipts
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node import protocol
from node.errors import CountersError, IdempotencyKeyReused, Overflow, PeerError
from node.protocol import Key
from node.quorum import QuorumWait
from node.tracing import end_with

if TYPE_CHECKING:
    from node.coordinator import Coordinator, Op

log = logging.getLogger("counters.idempotency")
CLAIMS_NAMESPACE = "#idempotency"  # '#' is not allowed in client names: no client can touch it


def claim_key(tenant: str, idempotency_key: str) -> Key:
    return (tenant, CLAIMS_NAMESPACE, idempotency_key)


class Idempotent:
    def __init__(self, coordinator: Coordinator) -> None:
        self.co = coordinator
        self.window_ms = int(coordinator.cluster.config.idempotency_window_s * 1000)
        self.hits = 0  # retries answered from a receipt, for metrics
        # (counter, idempotency key) -> [lock, attempts holding or waiting for it]
        self._locks: dict[tuple[Key, str], list[Any]] = {}

    async def run(self, op: Op, shard: int, consistency: str, fingerprint: str) -> dict[str, Any]:
        name = (op.key, op.idem)
        entry = self._locks.setdefault(name, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._run(op, shard, consistency, fingerprint)
        except CountersError as error:
            return {"error": error.to_problem()}
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[name]

    async def _run(self, op: Op, shard: int, consistency: str, fingerprint: str) -> dict[str, Any]:
        co, store = self.co, self.co.store
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
            return {"value": receipt.value, "replayed": True}
        co._check_writable(shard, consistency)
        delta = PNCounter.empty()
        if op.kind == "increment":
            co.admit(op)
            try:
                _, delta = store.increment(op.key, co.cluster.actor, op.delta)
            except CounterOverflowError as error:
                raise Overflow(str(error)) from None
        state = store.get(op.key) or PNCounter.empty()
        receipt = Receipt(now_ms, co.cluster.actor, fingerprint, state.value())
        store.add_receipts(op.key, {op.idem: receipt})
        await self._replicate(op, shard, consistency, delta, receipt)
        return {"value": receipt.value}

    async def _read(self, op: Op, shard: int, consistency: str) -> Receipt | None:
        """Merge the states and receipts of a read quorum; the receipt, if any has one."""
        co = self.co
        replicas = co.cluster.replicas(shard)
        needed = co._needed(consistency, co.cluster.config.read_quorum, len(replicas)) - 1
        if needed <= 0:
            return None
        peers = [n for n in replicas if n != co.cluster.node_id and co.cluster.serving(n)]
        body = [list(op.key), op.idem]

        def on_reply(reply: Any) -> None:
            try:
                if not isinstance(reply, list) or len(reply) != 2:
                    raise protocol.ProtocolError("a receipt reply is [state, receipt]")
                state = protocol.state_from_wire(reply[0])
                found = (
                    {} if reply[1] is None else protocol.receipts_from_wire([[op.idem, reply[1]]])
                )
            except protocol.ProtocolError as error:
                log.warning("bad receipt reply: %s", error)
                return
            co.store.merge(op.key, state)
            co.store.add_receipts(op.key, found)

        wait = QuorumWait("read")

        def asker(node_id: str) -> Callable[[], asyncio.Future[Any]]:
            return lambda: self._call(node_id, protocol.RECEIPT, body)

        wait.add(
            [asker(node_id)() for node_id in peers[:needed]],
            needed,
            on_reply,
            spares=[asker(node_id) for node_id in peers[needed:]],
        )
        await wait.wait(co.timeout)
        return co.store.receipt(op.key, op.idem)

    async def _replicate(
        self, op: Op, shard: int, consistency: str, delta: PNCounter, receipt: Receipt
    ) -> None:
        """The new slot and the receipt, in one REPLICATE entry, to a write quorum."""
        co = self.co
        cluster = co.cluster
        replicas = cluster.replicas(shard)
        needed = co._needed(consistency, cluster.config.write_quorum, len(replicas)) - 1
        entry = [
            list(op.key),
            pn_to_wire(delta),
            co.store.share(op.key),
            receipts.to_wire({op.idem: receipt}),
        ]
        counted: list[asyncio.Future[Any]] = []
        incoming: list[asyncio.Future[Any]] = []
        for node_id in cluster.write_targets(shard):
            if node_id != cluster.node_id and cluster.alive(node_id):
                future = self._call(node_id, protocol.REPLICATE, [entry])
                (counted if node_id in replicas else incoming).append(future)

        def merge(reply: Any) -> None:
            [state] = protocol.states_from_wire(reply, 1)
            if state is not None:
                co.store.merge(op.key, state)

        wait = QuorumWait("increment")
        wait.add(counted, needed, merge)
        wait.add(incoming, len(incoming), merge)
        await wait.wait(co.timeout)
        if co.sync:
            await co.persister.durable_now(co.timeout)

    def _call(self, node_id: str, kind: int, body: Any) -> asyncio.Future[Any]:
        address = self.co.cluster.address_of(node_id)
        if address is None:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(PeerError(f"no address for {node_id}"))
            return failed
        tracing = self.co.tracing
        span = tracing.start_peer_span(
            "replica write" if kind == protocol.REPLICATE else "replica read", node_id
        )
        trace = None if span is None else tracing.traceparent(span)
        call: Coroutine[Any, Any, Any] = self.co.pool.link(address).call(
            kind, body, self.co.timeout, trace
        )
        future = asyncio.ensure_future(call)
        if span is not None:
            end_with(span, future)
        return future

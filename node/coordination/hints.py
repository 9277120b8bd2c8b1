"""Hinted `consistency=one` increments: a node cut off from every replica of a counter keeps
the increment and hands it over later, as Dynamo's hinted hand-off does.

Without it, a node on the minority side of a partition refuses (503) every `one` increment
of a counter none of whose replicas it reaches, although `one` promises only that the
increment was applied somewhere and sent on. So when a client's `one` request holds only
plain increments (no Idempotency-Key: exactly-once needs a majority's grants) and no
replica of their shard is reachable from here, this node applies them to its own actor's
slot in its own store and answers 200 with `"hinted": true` (and no `"replicas"`: none
holds it yet). Its value is this node's view, which lacks what the replicas hold.

The hint then travels like any counter of a shard this node does not hold: write-behind
persists it (with Redis, in the very keys the replicas use), and the hand-over
(node/cluster/handover.py) pushes it to every replica once all of them are reachable and
drops it here only when all have acknowledged. A crash before that loses it, which is the
contract of `one` ("writes not yet on a second replica"), except with `--durability sync`:
there, as for every write, a hint is refused with nothing applied while the durable replica
is down, and answered only once the durable replica holds it.

One care: this node's actor may already own a slot of the counter at the replicas, from an
earlier hint or from when it replicated the shard, whose state it no longer holds (dropped
after a hand-over). Adding to a slot it does not know would restart it from zero, and the
merge (per-slot max) would hide the new increments. So a hint to a counter this node holds
no state of uses an actor that cannot have written it: the node's current actor if no shard
was dropped since that actor began, else a fresh one (rotation.py, as when a slot fills).

Otherwise a hint is an increment like any: one that would create a counter passes the
tenant's quota first (quota.py), one whose slot is full moves to a fresh actor
(rotation.apply_fresh), and each op of a request succeeds or fails on its own, so an op
refused (403, 422, or no fresh incarnation stored) never takes back those applied before it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from crdt import CounterOverflowError, PNCounter, SlotFullError
from node.base.errors import CountersError, Overflow
from node.cluster.membership import Cluster
from node.coordination.ops import Op, OpKind, OpResult
from node.coordination.quota import CounterQuota
from node.coordination.replication import Replicator
from node.coordination.rotation import ActorRotation
from node.storage.store import CounterStore


class Hints:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        rotation: ActorRotation,
        replicator: Replicator,
        quota: CounterQuota,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.rotation = rotation
        self.replicator = replicator
        self.quota = quota  # a hint that creates a counter counts toward its tenant's quota
        self.reachable: Callable[[str], bool] = replicator.reachable
        self.applied = 0  # hinted increments, for metrics
        self._clean = (cluster.actor, store.shards_dropped)  # an actor no drop has tainted

    def wanted(self, ops: list[Op], shards: list[int], consistency: str, hops: int) -> bool:
        """Whether these ops, which would go to another node, are to be kept here instead:
        a client's plain `one` increments of shards none of whose replicas we reach."""
        if hops or consistency != "one" or not self.cluster.ready:
            return False
        if any(op.kind is not OpKind.INCREMENT or op.idem for op in ops):
            return False
        return not any(
            self.reachable(node)
            for shard in set(shards)
            for node in self.cluster.replicas(shard)
            if node != self.cluster.node_id
        )

    async def apply(self, ops: list[Op]) -> list[OpResult]:
        """Apply the ops here; in sync mode, answer once the durable replica holds them."""
        replicator = self.replicator
        try:
            await replicator.check_store()  # sync mode: refused, nothing applied, when down
        except CountersError as error:
            return [OpResult.failed(error) for _ in ops]
        results = await self._apply(ops)
        if replicator.sync and any(result.ok for result in results):
            try:
                await replicator.persister.durable_now(replicator.timeout)
            except CountersError as error:  # applied here; may persist later
                return [OpResult.failed(error) if result.ok else result for result in results]
        return results

    async def _apply(self, ops: list[Op]) -> list[OpResult]:
        """Each op on its own: one that fails (a quota refusal, a rotation that could not
        store a fresh incarnation) fails alone, and the ops applied keep their answer."""
        results = []
        for op in ops:
            try:
                state = await self._increment(op)
            except CounterOverflowError as error:  # the value would leave int64
                results.append(OpResult.failed(Overflow(str(error))))
                continue
            except CountersError as error:  # nothing of this op applied
                results.append(OpResult.failed(error))
                continue
            self.applied += 1
            value, saturated = state.saturated_value()
            results.append(OpResult(value, saturated=saturated, hinted=True))
        return results

    async def _increment(self, op: Op) -> PNCounter:
        """The counter's state once op applied here, like any increment: refused
        (QuotaExceeded) if it would create a counter past the tenant's quota, applied under
        a fresh actor if this node's slot of the counter is full."""
        self.quota.admit(op.key)  # before a rotation: a refused op costs nothing
        actor = await self._actor_for(op)
        try:
            state, _ = self.store.increment(op.key, actor, op.delta)
        except SlotFullError:  # rotation.py: move on to a fresh actor, as Coordinator does
            dropped = self.store.shards_dropped
            actor, (state, _) = await self.rotation.apply_fresh(
                actor, partial(self.store.increment, op.key, delta=op.delta)
            )
            if self.store.shards_dropped == dropped:  # it began after every drop so far
                self._clean = (actor, dropped)
        return state

    async def _actor_for(self, op: Op) -> str:
        actor, dropped = self.cluster.actor, self.store.shards_dropped
        if op.key in self.store or self._clean == (actor, dropped):
            return actor
        await self.rotation.away_from(actor)  # a shard was dropped since we last looked
        self._clean = (self.cluster.actor, self.store.shards_dropped)
        return self.cluster.actor

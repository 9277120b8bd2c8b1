"""The coordinator: increments and reads against a shard's replicas, with quorums.

A write bumps this node's own actor slot, sends the new slot value to every other replica
(and to nodes receiving the shard in a hand-off) and answers once W replicas, itself
included, hold it. A read merges R replicas' states and repairs the stale ones. A node that
is not a ready replica of the shard forwards the work to the first serving replica (a keyed
op of a batch: to the batch's home when that serves the shard, `_owners`).
Batches take the same paths, many keys at a time, so their updates share peer frames; the
paths to the other replicas are node/coordination/replication.py's.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import cast

from crdt import CounterOverflowError, PNCounter, SlotFullError, saturate
from node.base.errors import (
    CountersError,
    Overflow,
    PeerError,
    PeerUnreachable,
    QuorumTimeout,
    QuorumUnavailable,
)
from node.base.keys import Key
from node.cluster.links import PeerLink
from node.cluster.membership import Cluster
from node.cluster.wire import FORWARD, ProtocolError
from node.coordination.hints import Hints
from node.coordination.idempotency import Idempotent, home
from node.coordination.ops import Op, OpKind, OpResult, forward_to_wire, results_from_wire
from node.coordination.quorum import QuorumWait
from node.coordination.quota import CounterQuota
from node.coordination.replication import Replicator, Writable
from node.coordination.rotation import ActorRotation
from node.coordination.view_catch_up import ViewCatchUp, ViewRefresh
from node.obs.tracing import OFF, Tracing
from node.storage.store import CounterStore

MAX_HOPS = 2
GATED = "claimed-batch"  # wire.FEATURES: a batch's claim and ops run as one group, gated
_FAILURE_REASONS = {QuorumUnavailable.type: "unavailable", QuorumTimeout.type: "timeout"}
Pending = list[OpResult | None]  # results in the order of ops; None: not decided yet


class Coordinator:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        replicator: Replicator,
        quota: CounterQuota,
        idempotent: Idempotent,
        rotation: ActorRotation,
        tracing: Tracing = OFF,
        refresh_view: ViewRefresh | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.replicator = replicator
        self.quota = quota
        self.idempotent = idempotent
        self.rotation = rotation  # a fresh actor when this node's slot of a counter fills
        self.hints = Hints(cluster, store, rotation, replicator, quota)
        self.tracing = tracing
        self.refresh_view = refresh_view  # Gossip.refresh: ask peers for their state now
        self.catch_up = ViewCatchUp(cluster, refresh_view)
        self.timeout = cluster.config.request_timeout_s
        # ops run here, for metrics
        self.applied = {OpKind.INCREMENT: 0, OpKind.GET: 0, OpKind.RESET: 0}
        self.quorum_failures = {"unavailable": 0, "timeout": 0}  # ops of requests from clients

    def owner(self, shard: int) -> str | None:
        """Who runs an operation on this shard: this node if it is a ready replica."""
        cluster = self.cluster
        if cluster.ready and cluster.node_id in cluster.replicas(shard):
            return cluster.node_id
        return cluster.coordinator(shard, self.replicator.reachable)

    def link_to(self, node_id: str) -> PeerLink:
        return self.replicator.link_to(node_id)

    # -- entry point ------------------------------------------------------------------------

    async def run(
        self, ops: list[Op], consistency: str, hops: int = 0, fingerprint: str = ""
    ) -> list[OpResult]:
        """One result per op, in order. `fingerprint` identifies the request that carried the
        ops' idempotency keys. `hops` counts the forwards so far; at 0 (a client's request)
        quorum failures are counted."""
        shard_of = self.cluster.shard_of
        shards = [shard_of(op.key) for op in ops]
        await self.catch_up.before_routing(ops, shards, consistency)
        owners = self._owners(ops, shards, hops)
        me = self.cluster.node_id
        if hops and self.refresh_view is not None and any(o != me for o in owners):
            # Forwarded here, yet to be forwarded again: the sender's view and ours disagree
            # about who serves (nodes turning up at start, or a ring change). Ask the peers
            # for their views now rather than spend the last hop on a stale one.
            await self.refresh_view([m.node_id for m in self.cluster.peers()])
            owners = self._owners(ops, shards, hops)
        if len(ops) > 1 and ops[0].kind is OpKind.CLAIM:  # a keyed batch, with its claim
            results = await self._run_claimed(ops, shards, owners, consistency, hops, fingerprint)
        elif all(owner == me for owner in owners):  # the common case: no grouping needed
            try:
                results = await self._run_local(ops, shards, consistency, fingerprint)
            except (QuorumUnavailable, QuorumTimeout) as error:
                if not hops:
                    self.quorum_failures[_FAILURE_REASONS[error.type]] += len(ops)
                raise
        else:
            results = await self._run_groups(ops, shards, owners, consistency, hops, fingerprint)
        if not hops:
            claim = results[0] if ops and ops[0].kind is OpKind.CLAIM else None
            # a batch refused at its claim is one failure, not one per op it gated
            self._count_failures([claim] if claim is not None and not claim.ok else results)
        return results

    def _owners(self, ops: list[Op], shards: list[int], hops: int = 0) -> list[str | None]:
        """Who runs each op. A keyed op: at its batch's home (idempotency.home) if that
        serves its shard, else on the shard's first serving replica, or, forwarded, here
        when this is a ready replica of it (idempotency.py). Others: any ready replica."""
        cluster, reachable, out = self.cluster, self.replicator.reachable, []
        homes: dict[tuple[str, str], str | None] = {}  # idempotency.home's, per batch
        for op, shard in zip(ops, shards, strict=True):
            if not op.idem:
                out.append(self.owner(shard))
            elif op.kind is OpKind.CLAIM:  # where its own shard says
                out.append(cluster.coordinator(shard, reachable))
            elif hops and self.owner(shard) == cluster.node_id:  # forwarded to a replica:
                out.append(cluster.node_id)  # run here, never on into the hop limit
            else:
                at = home(cluster, reachable, op.key, op.idem, cluster.replicas(shard), homes)
                out.append(at or cluster.coordinator(shard, reachable))
        return out

    def _count_failures(self, results: list[OpResult]) -> None:
        for result in results:
            if result.problem is not None:
                error_type = str(result.problem.get("type", "")).rpartition("/")[2]
                if error_type in _FAILURE_REASONS:
                    self.quorum_failures[_FAILURE_REASONS[error_type]] += 1

    async def _run_groups(
        self,
        ops: list[Op],
        shards: list[int],
        owners: list[str | None],
        consistency: str,
        hops: int,
        fingerprint: str,
        passed_over: str | None = None,
    ) -> list[OpResult]:
        """Run each owner's ops on it, side by side; results in the order of ops.
        `passed_over`: an owner already found unreachable for these ops."""
        groups: dict[str | None, list[int]] = {}
        for index, owner in enumerate(owners):
            groups.setdefault(owner, []).append(index)
        # Groups run side by side, and one group's failure is that group's per-op errors:
        # the others may have applied, so the batch as a whole must not fail.
        outcomes = await asyncio.gather(
            *(
                self._run_group(
                    owner,
                    [ops[i] for i in idx],
                    [shards[i] for i in idx],
                    consistency,
                    hops,
                    fingerprint,
                    passed_over,
                )
                for owner, idx in groups.items()
            )
        )
        results: Pending = [None] * len(ops)
        for indexes, outcome in zip(groups.values(), outcomes, strict=True):
            for index, result in zip(indexes, outcome, strict=True):
                results[index] = result
        return _decided(results)

    async def _run_claimed(
        self,
        ops: list[Op],
        shards: list[int],
        owners: list[str | None],
        consistency: str,
        hops: int,
        fingerprint: str,
    ) -> list[OpResult]:
        """A keyed batch: its claim (ops[0]), then its ops, none of which may apply unless
        the claim succeeds. When one node runs them all (N equal to the node count: the
        claim's coordinator is the batch's home), they run there as one group, where the
        claim gates the ops in the loop turn that applies them (idempotency.py): one
        forward, one reservation round and one replication round, not two of each.
        Otherwise, when that node cannot be reached (nothing ran there; the ops must not be
        split among others while the claim runs), or when its gossip has not said it gates
        (wire.FEATURES: a node of an earlier version would apply the ops of a failed claim),
        the claim runs first and the ops only after it succeeded."""
        owner = owners[0]
        if owner and owners.count(owner) == len(owners) and self.cluster.supports(owner, GATED):
            try:
                if owner == self.cluster.node_id:
                    return await self._run_local(ops, shards, consistency, fingerprint)
                return await self._forward(owner, ops, consistency, hops, fingerprint)
            except PeerUnreachable:
                pass  # unsent: the long way below
            except PeerError as error:  # sent: it may have run there
                return _forward_failed(owner, ops, error, sent=True)
            except CountersError as error:
                return [OpResult.failed(error) for _ in ops]
        run = partial(self._run_groups, consistency=consistency, hops=hops, fingerprint=fingerprint)
        [claimed] = await run(ops[:1], shards[:1], owners[:1])
        if claimed.problem is not None:
            return [claimed] * len(ops)
        return [claimed, *await run(ops[1:], shards[1:], owners[1:])]

    async def _run_group(
        self,
        owner: str | None,
        ops: list[Op],
        shards: list[int],
        consistency: str,
        hops: int,
        fingerprint: str,
        passed_over: str | None = None,
    ) -> list[OpResult]:
        try:
            if owner == self.cluster.node_id:
                return await self._run_local(ops, shards, consistency, fingerprint)
            if self.hints.wanted(ops, shards, consistency, hops):  # no replica in reach
                return await self.hints.apply(ops)
            if owner is None:
                raise QuorumUnavailable(
                    "no live replica serves this counter's shard", may_have_applied=False
                )
            return await self._forward(owner, ops, consistency, hops, fingerprint)
        except PeerError as error:  # the forward failed
            sent = not isinstance(error, PeerUnreachable)  # unsent: nothing ran there
            if not sent and passed_over is None and owner is not None:
                # A killed node refuses connections until the failure detector marks it
                # down: once, run the ops on the next serving replica we reach instead.
                reachable = self.replicator.reachable
                others = [
                    self.cluster.coordinator(shard, lambda n: n != owner and reachable(n))
                    for shard in shards
                ]
                return await self._run_groups(
                    ops, shards, others, consistency, hops, fingerprint, passed_over=owner
                )
            return _forward_failed(owner, ops, error, sent)
        except CountersError as error:
            return [OpResult.failed(error) for _ in ops]

    async def _forward(
        self, owner: str, ops: list[Op], consistency: str, hops: int, fingerprint: str
    ) -> list[OpResult]:
        if hops >= MAX_HOPS:
            # Views disagree about who serves the shard; running here would count a node that
            # is not a ready replica toward W and R, so refuse instead (nothing applied).
            raise QuorumUnavailable(
                f"no serving replica reached within {MAX_HOPS} forwards; nothing applied",
                may_have_applied=False,
            )
        body = forward_to_wire(ops, consistency, hops + 1, fingerprint)
        attributes = {"counters.peer": owner, "counters.ops": len(ops)}
        with self.tracing.span("forward", attributes=attributes):
            trace = self.tracing.traceparent()
            link = self.replicator.link_to(owner)
            reply = await link.call(FORWARD, body, self.timeout + 0.5, trace)
        try:
            return results_from_wire(reply, len(ops))
        except ProtocolError as error:  # it ran there, maybe: a failed forward, op by op
            raise PeerError(f"bad forward reply from {owner}: {error}") from None

    # -- local work -------------------------------------------------------------------------

    async def _run_local(
        self, ops: list[Op], shards: list[int], consistency: str, fingerprint: str = ""
    ) -> list[OpResult]:
        results: Pending = [None] * len(ops)
        kinds = {op.kind for op in ops}  # once: most requests are one op, or one kind
        if self.replicator.sync and kinds - {OpKind.GET}:  # a write of any kind, in sync mode
            await self.replicator.check_store()
        keyed = [index for index, op in enumerate(ops) if op.idem]
        if keyed:  # as one group: a keyed batch costs a few round trips, not two per op
            outcomes = await self.idempotent.run_many(
                [ops[i] for i in keyed], [shards[i] for i in keyed], consistency, fingerprint
            )
            for index, outcome in zip(keyed, outcomes, strict=True):
                results[index] = outcome
        if OpKind.RESET in kinds:
            await self._reset_local(ops, shards, consistency, results)
        wrote = False
        if OpKind.INCREMENT in kinds:
            wait = QuorumWait("increment")
            wrote, full = self._increment_local(wait, ops, shards, consistency, results)
            if full:  # rare: this node's slot of a counter filled (rotation.py)
                fresh = await self._increment_fresh(wait, ops, shards, consistency, results, full)
                wrote = wrote or fresh
        else:
            wait = QuorumWait("read")
        reads: dict[Key, dict[str, PNCounter | None]] = {}
        for index, op in enumerate(ops):
            if op.kind is OpKind.GET and op.key not in reads and results[index] is None:
                reads[op.key] = self.replicator.read(wait, op.key, shards[index], consistency)
        await self.replicator.settle(wait, wrote)
        for key, answers in reads.items():
            self.replicator.repair(key, answers)
        return self._finish(ops, shards, results)

    def _increment_local(
        self, wait: QuorumWait, ops: list[Op], shards: list[int], consistency: str, results: Pending
    ) -> tuple[bool, list[tuple[int, str]]]:
        """Apply the increments still undecided to this node's slot and send each changed
        key's new slot once; returns whether anything changed, and the ops left undecided
        because the slot filled, with the actor whose slot it was."""
        deltas: dict[Key, tuple[int, PNCounter]] = {}
        full: list[tuple[int, str]] = []
        actor = self.cluster.actor
        writable: Writable = {}  # per preference list, for the whole batch
        for index, op in enumerate(ops):
            if op.kind is not OpKind.INCREMENT or results[index] is not None:
                continue
            try:
                shard = shards[index]  # hashed once per op (run): the calls below take it
                self.replicator.check_writable(shard, consistency, writable)
                self.quota.admit(op.key, shard)
                if full and any(ops[i].key == op.key for i, _ in full):
                    raise SlotFullError("an earlier op of this batch waits for a fresh slot")
                p, n = self.store.increment_slot(op.key, actor, op.delta, shard)
            except CountersError as error:
                results[index] = OpResult.failed(error)
                continue
            except SlotFullError:
                # Later ops of the same counter wait too: ops apply in order, and whether
                # one leaves int64 depends on those before it.
                full.append((index, actor))
                continue
            except CounterOverflowError as error:
                results[index] = OpResult.failed(Overflow(str(error)))
                continue
            if op.delta == 0:
                continue  # a zero delta changed nothing, so there is nothing to send
            # the changed half of the slot, as store.increment returns it
            delta = (
                PNCounter.from_slot(actor, p, 0)
                if op.delta > 0
                else PNCounter.from_slot(actor, 0, n)
            )
            previous = deltas.get(op.key)
            if previous is not None:
                delta = previous[1].merge(delta)
            deltas[op.key] = (shards[index], delta)
        self.replicator.write_many(wait, deltas, consistency)
        return bool(deltas), full

    async def _increment_fresh(
        self,
        wait: QuorumWait,
        ops: list[Op],
        shards: list[int],
        consistency: str,
        results: Pending,
        full: list[tuple[int, str]],
    ) -> bool:
        """The increments refused for a full slot, applied under a fresh actor (admitted
        already) and sent like any; returns whether anything changed."""
        deltas: dict[Key, tuple[int, PNCounter]] = {}
        for index, full_actor in full:
            op = ops[index]
            try:
                _, (_, delta) = await self.rotation.apply_fresh(
                    full_actor, partial(self.store.increment, op.key, delta=op.delta)
                )
            except CountersError as error:
                results[index] = OpResult.failed(error)
                continue
            except CounterOverflowError as error:  # others moved the value meanwhile
                results[index] = OpResult.failed(Overflow(str(error)))
                continue
            previous = deltas.get(op.key)
            if previous is not None:  # under another actor, after another move: merge
                delta = previous[1].merge(delta)
            deltas[op.key] = (shards[index], delta)
        for key, (shard, delta) in deltas.items():
            self.replicator.write(wait, key, shard, delta, consistency)
        return bool(deltas)

    def _finish(self, ops: list[Op], shards: list[int], results: Pending) -> list[OpResult]:
        """Fill in the value of every op that ran here without an error, and count them."""
        applied, value_of = self.applied, self.store.value
        for index, op in enumerate(ops):
            result = results[index]
            if result is None:
                value, saturated = saturate(value_of(op.key, shards[index]) or 0)
                results[index] = OpResult(value, saturated=saturated)
                applied[op.kind] += 1
            elif op.kind is not OpKind.CLAIM and result.ok and not result.replayed:
                applied[op.kind] += 1  # an idempotent op or a reset that ran here
        return _decided(results)

    async def _reset_local(
        self, ops: list[Op], shards: list[int], consistency: str, results: Pending
    ) -> None:
        """Reset: merge what a read quorum has seen, clear exactly that (an observed floor per
        actor, see crdt.pncounter), and replicate the floor like any write."""
        replicator = self.replicator
        todo: dict[Key, int] = {}
        for index, op in enumerate(ops):
            if op.kind is not OpKind.RESET or results[index] is not None:
                continue
            try:
                replicator.check_writable(shards[index], consistency)
            except CountersError as error:
                results[index] = OpResult.failed(error)
                continue
            todo[op.key] = shards[index]
        seen = QuorumWait("read")
        answers = {
            key: replicator.read(seen, key, shard, consistency) for key, shard in todo.items()
        }
        await seen.wait(self.timeout)
        for key, found in answers.items():
            replicator.repair(key, found)
        cleared = QuorumWait("reset")
        for key, shard in todo.items():
            _, floor = self.store.reset(key)
            if not floor.is_empty():
                replicator.write(cleared, key, shard, floor, consistency, own_slot=False)
        await replicator.settle(cleared, wrote=bool(todo))


def _forward_failed(owner: object, ops: list[Op], error: PeerError, sent: bool) -> list[OpResult]:
    """Every op but a read changes state there, so it may have applied if the forward sent."""
    why = f"forwarding to {owner} failed: {error}"
    return [
        OpResult.failed(QuorumUnavailable(why, may_have_applied=sent and op.kind is not OpKind.GET))
        for op in ops
    ]


def _decided(results: Pending) -> list[OpResult]:
    """The results once every op has one (each path above fills in every op it is given)."""
    return cast(list[OpResult], results)

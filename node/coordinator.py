"""The coordinator: increments and reads against a shard's replicas, with quorums.

A write bumps this node's own actor slot, sends the new slot value to every other replica
(and to nodes receiving the shard in a hand-off) and answers once W replicas, itself
included, hold it. A read merges R replicas' states and repairs the stale ones. A node that
is not a ready replica of the shard forwards the work to the first serving replica.
Batches take the same paths, many keys at a time, so their updates share peer frames.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from crdt import CounterOverflowError, PNCounter
from node.cluster import Cluster
from node.errors import CountersError, Overflow, PeerError, QuorumTimeout, QuorumUnavailable
from node.idempotency import Idempotent
from node.peers import PeerPool
from node.persistence import Persister
from node.protocol import FORWARD, Key
from node.quorum import QuorumWait
from node.quota import CounterQuota
from node.store import CounterStore
from node.tracing import OFF, Tracing, end_with

MAX_HOPS = 2
_FAILURE_REASONS = {QuorumUnavailable.type: "unavailable", QuorumTimeout.type: "timeout"}


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a request: `increment` (with delta), `get`, `reset`, or `claim` (take
    an idempotency key for a whole batch). `idem`: the op's idempotency key, if any."""

    kind: str
    key: Key
    delta: int = 0
    idem: str = ""


class RemoteError(CountersError):
    """An error a forwarded request met on the node that ran it, passed on as it was."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "remote error")))
        self.status = int(problem.get("status", 502))
        self.problem = problem

    def to_problem(self) -> dict[str, Any]:
        return self.problem


class Coordinator:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        pool: PeerPool,
        persister: Persister,
        tracing: Tracing = OFF,
    ) -> None:
        self.cluster = cluster
        self.tracing = tracing
        self.store = store
        self.pool = pool
        self.persister = persister
        self.sync = cluster.config.durability == "sync"
        self.timeout = cluster.config.request_timeout_s
        self.idempotent = Idempotent(self)
        self.quota = CounterQuota(cluster.config, cluster, store)
        self.applied = {"increment": 0, "get": 0, "reset": 0}  # ops run here, for metrics
        self.quorum_failures = {"unavailable": 0, "timeout": 0}  # ops of requests from clients

    def _needed(self, consistency: str, quorum: int, replicas: int) -> int:
        if consistency == "one":
            return 1
        if consistency == "all":
            return replicas
        return min(quorum, replicas)

    def owner(self, shard: int) -> str | None:
        """Who runs an operation on this shard: this node if it is a ready replica."""
        cluster = self.cluster
        if cluster.ready and cluster.node_id in cluster.replicas(shard):
            return cluster.node_id
        return cluster.coordinator(shard)

    # -- entry point ------------------------------------------------------------------------

    async def run(
        self, ops: list[Op], consistency: str, hops: int = 0, fingerprint: str = ""
    ) -> list[dict[str, Any]]:
        """Results in the order of ops: {"value": int} or {"error": problem}. `fingerprint`
        identifies the request that carried the ops' idempotency keys. `hops` counts the
        forwards so far; at 0 (a client's request) quorum failures are counted."""
        shard_of = self.cluster.shard_of
        shards = [shard_of(op.key) for op in ops]
        # An idempotent op always runs on the shard's first serving replica, which
        # serialises the retries of one key; other ops run on any ready replica.
        owners = [
            self.cluster.coordinator(shard) if op.idem else self.owner(shard)
            for op, shard in zip(ops, shards, strict=True)
        ]
        me = self.cluster.node_id
        if all(owner == me for owner in owners):  # the common case: no grouping needed
            try:
                results = await self._run_local(ops, shards, consistency, fingerprint)
            except (QuorumUnavailable, QuorumTimeout) as error:
                if not hops:
                    self.quorum_failures[_FAILURE_REASONS[error.type]] += len(ops)
                raise
        else:
            results = await self._run_groups(ops, shards, owners, consistency, hops, fingerprint)
        if not hops:
            for result in results:
                if "error" in result:
                    error_type = result["error"].get("type", "").rpartition("/")[2]
                    if error_type in _FAILURE_REASONS:
                        self.quorum_failures[_FAILURE_REASONS[error_type]] += 1
        return results

    async def _run_groups(
        self,
        ops: list[Op],
        shards: list[int],
        owners: list[str | None],
        consistency: str,
        hops: int,
        fingerprint: str,
    ) -> list[dict[str, Any]]:
        """Run each owner's ops on it, side by side; results in the order of ops."""
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
                )
                for owner, idx in groups.items()
            )
        )
        results: list[dict[str, Any]] = [{} for _ in ops]
        for indexes, outcome in zip(groups.values(), outcomes, strict=True):
            for index, result in zip(indexes, outcome, strict=True):
                results[index] = result
        return results

    async def _run_group(
        self,
        owner: str | None,
        ops: list[Op],
        shards: list[int],
        consistency: str,
        hops: int,
        fingerprint: str,
    ) -> list[dict[str, Any]]:
        try:
            if owner == self.cluster.node_id:
                return await self._run_local(ops, shards, consistency, fingerprint)
            if owner is None:
                raise QuorumUnavailable(
                    "no live replica serves this counter's shard", may_have_applied=False
                )
            return await self._forward(owner, ops, consistency, hops, fingerprint)
        except CountersError as error:
            if isinstance(error, PeerError):  # the forward failed: it may have run there
                return [
                    {
                        "error": QuorumUnavailable(
                            f"forwarding to {owner} failed: {error}",
                            may_have_applied=op.kind == "increment",
                        ).to_problem()
                    }
                    for op in ops
                ]
            return [{"error": error.to_problem()} for _ in ops]

    async def _forward(
        self, owner: str, ops: list[Op], consistency: str, hops: int, fingerprint: str
    ) -> list[dict[str, Any]]:
        if hops >= MAX_HOPS:
            # Views disagree about who serves the shard; running here would count a node that
            # is not a ready replica toward W and R, so refuse instead (nothing applied).
            raise QuorumUnavailable(
                f"no serving replica reached within {MAX_HOPS} forwards; nothing applied",
                may_have_applied=False,
            )
        address = self.cluster.address_of(owner)
        if address is None:
            raise QuorumUnavailable(f"no address for {owner}")
        body = {
            "ops": [[op.kind, list(op.key), op.delta, op.idem] for op in ops],
            "consistency": consistency,
            "hops": hops + 1,
            "fingerprint": fingerprint,
        }
        attributes = {"counters.peer": owner, "counters.ops": len(ops)}
        with self.tracing.span("forward", attributes=attributes):
            trace = self.tracing.traceparent()
            reply = await self.pool.link(address).call(FORWARD, body, self.timeout + 0.5, trace)
        if not isinstance(reply, list) or len(reply) != len(ops):
            raise QuorumUnavailable(f"bad forward reply from {owner}")
        return reply

    # -- local work -------------------------------------------------------------------------

    async def _run_local(
        self, ops: list[Op], shards: list[int], consistency: str, fingerprint: str = ""
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{} for _ in ops]
        writes = any(op.kind != "get" for op in ops)
        if self.sync and writes and not await self.persister.reachable(self.timeout):
            raise QuorumUnavailable(
                "sync durability needs the durable replica, which is unreachable; nothing applied",
                may_have_applied=False,
            )
        for index, op in enumerate(ops):
            if op.idem:
                results[index] = await self.idempotent.run(
                    op, shards[index], consistency, fingerprint
                )
        if any(op.kind == "reset" for op in ops):
            await self._reset_local(ops, shards, consistency, results)
        wait = QuorumWait("increment" if any(op.kind == "increment" for op in ops) else "read")
        deltas: dict[Key, tuple[int, PNCounter]] = {}
        actor = self.cluster.actor
        for index, op in enumerate(ops):
            if op.kind == "increment" and not results[index]:
                try:
                    self._check_writable(shards[index], consistency)
                    self.admit(op)
                    _, delta = self.store.increment(op.key, actor, op.delta)
                except CountersError as error:
                    results[index] = {"error": error.to_problem()}
                    continue
                except CounterOverflowError as error:
                    results[index] = {"error": Overflow(str(error)).to_problem()}
                    continue
                if delta.is_empty():
                    continue  # a zero delta changed nothing, so there is nothing to send
                previous = deltas.get(op.key)
                if previous is not None:
                    delta = previous[1].merge(delta)
                deltas[op.key] = (shards[index], delta)
        for key, (shard, delta) in deltas.items():
            self._replicate(wait, key, shard, delta, consistency)
        reads: dict[Key, dict[str, PNCounter | None]] = {}
        for index, op in enumerate(ops):
            if op.kind == "get" and op.key not in reads and not results[index]:
                reads[op.key] = self._read(wait, op.key, shards[index], consistency)
        await wait.wait(self.timeout)
        if deltas and self.sync:
            await self.persister.durable_now(self.timeout)
        for key, answers in reads.items():
            self._repair(key, answers)
        applied = self.applied
        for index, op in enumerate(ops):
            result = results[index]
            if not result:
                state = self.store.get(op.key)
                results[index] = {"value": 0 if state is None else state.value()}
                applied[op.kind] += 1
            elif op.kind != "claim" and "value" in result and not result.get("replayed"):
                applied[op.kind] += 1  # an idempotent op or a reset that ran here
        return results

    async def _reset_local(
        self, ops: list[Op], shards: list[int], consistency: str, results: list[dict[str, Any]]
    ) -> None:
        """Reset: merge what a read quorum has seen, clear exactly that (an observed floor per
        actor, see crdt.pncounter), and replicate the floor like any write."""
        todo: dict[Key, int] = {}
        for index, op in enumerate(ops):
            if op.kind != "reset" or results[index]:
                continue
            try:
                self._check_writable(shards[index], consistency)
            except CountersError as error:
                results[index] = {"error": error.to_problem()}
                continue
            todo[op.key] = shards[index]
        seen = QuorumWait("read")
        answers = {key: self._read(seen, key, shard, consistency) for key, shard in todo.items()}
        await seen.wait(self.timeout)
        for key, found in answers.items():
            self._repair(key, found)
        cleared = QuorumWait("reset")
        for key, shard in todo.items():
            _, floor = self.store.reset(key)
            if not floor.is_empty():
                self._replicate(cleared, key, shard, floor, consistency, own_slot=False)
        await cleared.wait(self.timeout)
        if todo and self.sync:
            await self.persister.durable_now(self.timeout)

    def admit(self, op: Op) -> None:
        """Refuse an increment that would create a counter past its tenant's quota (a zero
        delta creates one too)."""
        if self.store.get(op.key) is None:
            self.quota.admit_new(op.key[0])

    def _check_writable(self, shard: int, consistency: str) -> None:
        """Refuse before applying anything when the quorum is out of reach (nothing changes)."""
        replicas = self.cluster.replicas(shard)
        needed = self._needed(consistency, self.cluster.config.write_quorum, len(replicas))
        if self.sync and not self.persister.healthy:
            raise QuorumUnavailable(
                "sync durability needs the durable replica, which is unreachable; nothing applied",
                may_have_applied=False,
            )
        live = sum(1 for n in replicas if self.cluster.alive(n))
        if live < needed:
            raise QuorumUnavailable(
                f"{live} of {len(replicas)} replicas are live, {needed} needed; nothing applied",
                may_have_applied=False,
            )

    def _replicate(
        self,
        wait: QuorumWait,
        key: Key,
        shard: int,
        delta: PNCounter,
        consistency: str,
        own_slot: bool = True,
    ) -> None:
        """Send delta to the shard's other replicas; own_slot: it is only this node's slot."""
        cluster = self.cluster
        replicas = cluster.replicas(shard)
        needed = self._needed(consistency, cluster.config.write_quorum, len(replicas)) - 1
        counted: list[Any] = []
        incoming: list[Any] = []
        p, n = delta.slot(cluster.actor)
        for node_id in cluster.write_targets(shard):
            if node_id == cluster.node_id or not cluster.alive(node_id):
                continue
            link = self.link_to(node_id)
            span = self.tracing.start_peer_span("replica write", node_id)
            trace = None if span is None else self.tracing.traceparent(span)
            if own_slot:
                future = link.replicate_slot(key, p, n, trace)
            else:
                future = link.replicate(key, delta, trace)
            if span is not None:
                end_with(span, future)
            (counted if node_id in replicas else incoming).append(future)
        merge = lambda state: state is None or self.store.merge(key, state)  # noqa: E731
        wait.add(counted, needed, merge)
        # A node receiving the shard in a hand-off must hold the write too (as Cassandra does
        # for pending ranges): it may already have pulled the shard, and once the ring
        # switches it serves reads in place of a replica that may be leaving.
        wait.add(incoming, len(incoming), merge)

    def _read(
        self, wait: QuorumWait, key: Key, shard: int, consistency: str
    ) -> dict[str, PNCounter | None]:
        """Ask R-1 serving peers (spares if one fails); returns their states as they come."""
        cluster = self.cluster
        replicas = cluster.replicas(shard)
        needed = self._needed(consistency, cluster.config.read_quorum, len(replicas)) - 1
        answers: dict[str, PNCounter | None] = {}
        if needed <= 0:
            return answers
        peers = [n for n in replicas if n != cluster.node_id and cluster.serving(n)]

        def starter(node_id: str) -> Any:
            def start() -> Any:
                span = self.tracing.start_peer_span("replica read", node_id)
                trace = None if span is None else self.tracing.traceparent(span)
                future = self.link_to(node_id).read(key, trace)
                if span is not None:
                    end_with(span, future)
                future.add_done_callback(lambda f: _record(answers, node_id, f))
                return future

            return start

        first = [starter(n)() for n in peers[:needed]]
        on_state = lambda state: state is None or self.store.merge(key, state)  # noqa: E731
        wait.add(first, needed, on_state, spares=[starter(n) for n in peers[needed:]])
        return answers

    def _repair(self, key: Key, answers: dict[str, PNCounter | None]) -> None:
        """Send the merged state's missing slots to replicas that answered a stale state."""
        merged = self.store.get(key)
        if merged is None:
            return
        for node_id, state in answers.items():
            if state is not None and state != merged:
                future = self.link_to(node_id).replicate(key, merged.delta_since(state))
                future.add_done_callback(_ignore_failure)

    def link_to(self, node_id: str) -> Any:
        address = self.cluster.address_of(node_id)
        if address is None:
            raise QuorumUnavailable(f"no address for {node_id}")
        return self.pool.link(address)


def _record(answers: dict[str, PNCounter | None], node_id: str, future: Any) -> None:
    if not future.cancelled() and future.exception() is None:
        answers[node_id] = future.result()


def _ignore_failure(future: Any) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so a failed background write is not reported twice

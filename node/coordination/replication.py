"""Replication: the one path by which the coordinator's writes and reads reach the other
replicas of a shard, for plain and idempotent ops alike.

A write sends the new value of this node's own slot (a SLOTS entry), or a partial state
(reset floors, an idempotent op's slot with its receipts: a REPLICATE entry), to every
other live replica and to nodes receiving the shard in a hand-off. Peer links group-commit
what they are given into one frame per peer. Replies merge into the store as they come; a
QuorumWait counts them. A read asks R-1 serving peers, with spares, and a repair sends a
stale replica what it lacked.

Whatever state of a counter this node sends (a write, a repair) carries the counter's
receipts not yet durable here, and whatever state a peer answers is merged after the
receipts it carries: a slot never travels without the receipts of the keyed ops it counts
(node/coordination/idempotency.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.errors import CountersError, PeerError, QuorumUnavailable
from node.base.keys import Key
from node.cluster.handoff import NOT_HELD
from node.cluster.links import PeerLink
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.cluster.wire import Stated
from node.coordination.quorum import QuorumWait, Starter
from node.obs.tracing import OFF, Tracing, end_with
from node.storage.store import CounterStore
from node.storage.write_behind import Persister

PeerFuture = asyncio.Future[Any]
Writable = dict[tuple[str, ...], CountersError | None]  # check_writable's, per replicas
HEDGE_FRACTION = 0.125  # of the request timeout: 0.25 s by default

SYNC_STORE_DOWN = "sync durability needs the durable replica, which is unreachable; nothing applied"


BACKLOG_WAIT_FRACTION = 0.25  # of the request timeout, at most, per acknowledgement


def needed(consistency: str, quorum: int, replicas: int) -> int:
    """Replicas (this one included) that must answer at a consistency level."""
    if consistency == "one":
        return 1
    if consistency == "all":
        return replicas
    return min(quorum, replicas)


class Replicator:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        pool: PeerPool,
        persister: Persister,
        tracing: Tracing = OFF,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.pool = pool
        self.persister = persister
        self.tracing = tracing
        self.sync = cluster.config.durability == "sync"
        self.timeout = cluster.config.request_timeout_s
        # A read asks a spare too when a peer has not answered in this long (a silent peer
        # would otherwise cost the whole request timeout).
        self.hedge_after = self.timeout * HEDGE_FRACTION

    def reachable(self, node_id: str) -> bool:
        """Alive (heard from, not marked down) and our own link to it not dead: a replica
        whose gossip reaches us but which does not answer us cannot hold a write."""
        if node_id == self.cluster.node_id or not self.cluster.alive(node_id):
            return self.cluster.alive(node_id)
        address = self.cluster.address_of(node_id)
        return address is None or self.pool.reachable(address)

    def link_to(self, node_id: str) -> PeerLink:
        address = self.cluster.address_of(node_id)
        if address is None:
            raise QuorumUnavailable(f"no address for {node_id}")
        return self.pool.link(address)

    # -- before applying --------------------------------------------------------------------

    async def check_store(self) -> None:
        """In sync mode, refuse a write before it applies when the durable replica is down."""
        if self.sync and not await self.persister.reachable(self.timeout):
            raise QuorumUnavailable(SYNC_STORE_DOWN, may_have_applied=False)

    def check_writable(self, shard: int, consistency: str, seen: Writable | None = None) -> None:
        """Refuse before applying anything when the quorum is out of reach (nothing changes).
        `seen`: the answers of a batch's earlier calls, per preference list (they depend on
        the replicas only, and liveness changes only across an await): a batch of 100 ops
        spans a few lists, and asking every op's replicas was 5% of a batch's CPU."""
        replicas = self.cluster.replicas(shard)
        if seen is not None:
            if replicas not in seen:
                try:
                    self.check_writable(shard, consistency)
                    seen[replicas] = None
                except CountersError as error:
                    seen[replicas] = error
            refusal = seen[replicas]
            if refusal is not None:
                raise refusal
            return
        if self.cluster.node_id not in replicas:
            # A ring change took the shard from this node while the op waited (its grants,
            # the durable replica): its store may have dropped the counter, so applying
            # would start this node's slot again from zero, hidden by the owners' per-slot
            # max. Checked in the loop turn of the apply, like the rest.
            raise QuorumUnavailable(
                "this node no longer replicates the counter's shard (the ring changed); "
                "nothing applied",
                may_have_applied=False,
            )
        wanted = needed(consistency, self.cluster.config.write_quorum, len(replicas))
        if self.sync and not self.persister.healthy:
            raise QuorumUnavailable(SYNC_STORE_DOWN, may_have_applied=False)
        live = sum(1 for n in replicas if self.reachable(n))
        if live < wanted:
            raise QuorumUnavailable(
                f"{live} of {len(replicas)} replicas are live, {wanted} needed; nothing applied",
                may_have_applied=False,
            )

    # -- writes -----------------------------------------------------------------------------

    def write(
        self,
        wait: QuorumWait,
        key: Key,
        shard: int,
        delta: PNCounter,
        consistency: str,
        *,
        own_slot: bool = True,
        receipts: Mapping[str, Receipt] | None = None,
    ) -> None:
        """Send delta to the shard's other replicas, counted in `wait`. own_slot: delta is
        only this node's slot (the compact SLOTS entry), labelled with the delta's own actor,
        never the node's current one, which a rotation (rotation.py) may have changed since
        the delta was made; receipts travel with the state."""
        unflushed = self.store.unflushed_receipts(key)  # one dict lookup; usually empty
        if unflushed:  # this node's slot may count them: never send it without them
            receipts = {**unflushed, **receipts} if receipts else unflushed
        actor = _sole_actor(delta) if own_slot and not receipts else None
        send: Callable[[PeerLink, str | None], PeerFuture]
        if actor is not None:
            send = partial(_send_slots, actor, [(key, *delta.slot(actor))], [key])
        else:
            send = partial(_send_states, [(key, delta, receipts)])
        cluster = self.cluster
        replicas, targets = cluster.replicas(shard), cluster.write_targets(shard)
        self._write_group(wait, replicas, targets, [key], consistency, send)

    def write_many(
        self,
        wait: QuorumWait,
        deltas: Mapping[Key, tuple[int, PNCounter]],
        consistency: str,
        receipts: Mapping[Key, Mapping[str, Receipt]] | None = None,
    ) -> None:
        """write() of many keys (key -> (shard, delta), with each key's receipts if any): a
        batch's. Keys that share replicas and hand-off targets go to each peer under one
        future (own slots in a SLOTS frame, states with receipts in a REPLICATE frame),
        counted in one quorum group, so the cost per key is a few dict operations."""
        cluster = self.cluster
        unflushed_of = self.store.unflushed_receipts
        slots: dict[tuple[tuple[str, ...], tuple[str, ...], str], list[Any]] = {}
        states: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Any]] = {}
        for key, (shard, delta) in deltas.items():
            found = receipts.get(key) if receipts else None
            unflushed = unflushed_of(key)  # one dict lookup; usually empty
            if unflushed:  # this node's slot may count them: never send it without them
                found = {**unflushed, **found} if found else unflushed
            actor = None if found else _sole_actor(delta)
            replicas, targets = cluster.replicas(shard), cluster.write_targets(shard)
            if actor is not None:
                slots.setdefault((replicas, targets, actor), []).append((key, *delta.slot(actor)))
            else:  # receipts, or slots of two actors around a rotation: the whole delta
                states.setdefault((replicas, targets), []).append((key, delta, found))
        for (replicas, targets, actor), items in slots.items():
            keys = [k for k, _, _ in items]  # one list for the repairers and every link
            send = partial(_send_slots, actor, items, keys)
            self._write_group(wait, replicas, targets, keys, consistency, send)
        for (replicas, targets), items in states.items():
            send = partial(_send_states, items)
            self._write_group(wait, replicas, targets, [k for k, _, _ in items], consistency, send)

    def _write_group(
        self,
        wait: QuorumWait,
        replicas: tuple[str, ...],
        targets: tuple[str, ...],
        keys: list[Key],
        consistency: str,
        send: Callable[[PeerLink, str | None], PeerFuture],
    ) -> None:
        """Send a group of keys with the same replicas and targets (a write of one key, or
        a batch's): `send` queues them on a link under one future, which resolves to the
        peer's answer per key, in order. A node receiving the shard in a hand-off must hold
        the write too (as Cassandra does for pending ranges): it may already have pulled
        the shard, and once the ring switches it serves reads in place of a replica that
        may be leaving."""
        me = self.cluster.node_id
        wanted = needed(consistency, self.cluster.config.write_quorum, len(replicas)) - 1
        counted: list[PeerFuture] = []
        incoming: list[PeerFuture] = []
        sends: list[asyncio.Future[bool]] = []
        for node_id in targets:
            if node_id == me or not self.reachable(node_id):
                continue
            link = self.link_to(node_id)
            span = self.tracing.start_peer_span("replica write", node_id)
            trace = None if span is None else self.tracing.traceparent(span)
            future = send(link, trace)
            if span is not None:
                end_with(span, future)
            future.add_done_callback(self._batch_repairer(keys, node_id))
            if node_id in replicas:
                counted.append(future)
                if wanted == 0:  # consistency=one: see QuorumWait.sent_on
                    sends.append(link.written(future))
            else:
                incoming.append(_unless_not_held(future))
        if sends:
            wait.sends.append(sends)
        # the repairer merges what the peers answered; the group only counts them
        wait.add(counted, wanted, _ignore)
        wait.add(incoming, len(incoming), _ignore)

    def _batch_repairer(self, keys: list[Key], node_id: str) -> Callable[[PeerFuture], None]:
        """A write reply is the replica's merged state of each key when it differs from
        ours (in the keys' order): merge it, and send the replica the slots it lacks, so a
        replica that missed earlier writes (of other coordinators too) is repaired by the
        next write, not only this node."""

        def repair(future: PeerFuture) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            for key, stated in zip(keys, future.result(), strict=True):
                if stated is not None:
                    self._repair_one(key, node_id, stated)

        return repair

    async def settle(self, wait: QuorumWait, wrote: bool) -> None:
        """Wait for the replicas `wait` counts; in sync mode also for the durable replica."""
        await wait.wait(self.timeout)
        if wait.sends:
            await wait.sent_on(self.timeout)
        if wrote and self.sync:
            await self.persister.durable_now(self.timeout)
        elif wrote and self.persister.pressing:
            # A share of the timeout: a forwarded op's whole round trip must still fit it.
            await self.persister.below_backlog(self.timeout * BACKLOG_WAIT_FRACTION)

    # -- reads ------------------------------------------------------------------------------

    def read(
        self, wait: QuorumWait, key: Key, shard: int, consistency: str
    ) -> dict[str, PNCounter | None]:
        """Ask R-1 serving peers (spares if one fails); returns their states as they come."""
        answers: dict[str, PNCounter | None] = {}
        peers, wanted = self.read_peers(shard, consistency)
        if wanted <= 0:
            return answers

        def starter(node_id: str) -> Starter:
            def start() -> PeerFuture:
                span = self.tracing.start_peer_span("replica read", node_id)
                trace = None if span is None else self.tracing.traceparent(span)
                future = self.link_to(node_id).read(key, trace)
                if span is not None:
                    end_with(span, future)
                future.add_done_callback(lambda f: _record(answers, node_id, f))
                return future

            return start

        first = [starter(n)() for n in peers[:wanted]]
        spares = [starter(n) for n in peers[wanted:]]
        wait.add(first, wanted, self._merger(key), spares, hedge_after=self.hedge_after)
        return answers

    def ask_peers(
        self,
        wait: QuorumWait,
        peers: list[str],
        wanted: int,
        kind: int,
        body: Any,
        on_reply: Callable[[Any], object],
    ) -> None:
        """Send one request (a read other than a state: idempotency receipts, reservations)
        to the first `wanted` of these peers, the others spares, asked when one fails or is
        slow (as a read's: a peer busy just after its start must not time the request out);
        on_reply gets each answer. One request serves many shards whose read peers are the
        same (read_peers)."""
        if wanted <= 0:
            return

        def asker(node_id: str) -> Starter:
            return lambda: self._call(node_id, kind, body)

        first = [asker(n)() for n in peers[:wanted]]
        spares = [asker(n) for n in peers[wanted:]]
        wait.add(first, wanted, on_reply, spares=spares, hedge_after=self.hedge_after)

    def read_peers(self, shard: int, consistency: str) -> tuple[list[str], int]:
        """The serving peers to read from, those our link reaches first (the others are
        asked last, as spares), and how many of them must answer. A replica that a pending
        ring takes the shard from does not count itself: the others may have switched rings
        already and stopped sending it writes, and it would not know."""
        cluster = self.cluster
        replicas = cluster.replicas(shard)
        wanted = needed(consistency, cluster.config.read_quorum, len(replicas)) - 1
        peers = [n for n in replicas if n != cluster.node_id and cluster.serving(n)]
        pending = cluster.state.pending
        if pending is not None and cluster.node_id not in pending.preference_list(shard):
            wanted = min(wanted + 1, max(len(replicas) - 1, 1))
        return sorted(peers, key=lambda n: not self.reachable(n)), wanted

    def repair(self, key: Key, answers: dict[str, PNCounter | None]) -> None:
        """Send the merged state's missing slots to replicas that answered a stale state."""
        merged = self.store.get(key)
        if merged is None:
            return
        for node_id, state in answers.items():
            if state is not None and state != merged:
                link = self.link_to(node_id)
                missing = merged.delta_since(state)
                future = link.replicate(key, missing, receipts=self.store.unflushed_receipts(key))
                future.add_done_callback(_ignore_failure)

    def _repair_one(self, key: Key, node_id: str, stated: Stated) -> None:
        """Merge a replica's answered state of key; send it the slots it lacks."""
        state = stated[0]
        merged = _merge_stated(self.store, key, stated)
        if merged == state:
            return
        try:
            link = self.link_to(node_id)
        except QuorumUnavailable:  # gone from the view meanwhile: gossip repairs it
            return
        missing, unflushed = merged.delta_since(state), self.store.unflushed_receipts(key)
        link.replicate(key, missing, receipts=unflushed).add_done_callback(_ignore_failure)

    def _call(self, node_id: str, kind: int, body: Any) -> PeerFuture:
        address = self.cluster.address_of(node_id)
        if address is None:
            failed: PeerFuture = asyncio.get_running_loop().create_future()
            failed.set_exception(PeerError(f"no address for {node_id}"))
            return failed
        span = self.tracing.start_peer_span("replica read", node_id)
        trace = None if span is None else self.tracing.traceparent(span)
        future = asyncio.ensure_future(
            self.pool.link(address).call(kind, body, self.timeout, trace)
        )
        if span is not None:
            end_with(span, future)
        return future

    def _merger(self, key: Key) -> Callable[[Stated | None], object]:
        store = self.store
        return lambda stated: stated is None or _merge_stated(store, key, stated)


def _merge_stated(store: CounterStore, key: Key, stated: Stated) -> PNCounter:
    """A peer's state of key: the receipts it carries first, then its slots."""
    state, found = stated
    if found:
        store.add_receipts(key, found)
    return store.merge(key, state)


def _unless_not_held(future: PeerFuture) -> PeerFuture:
    """A hand-off target's answer, where a refusal because it does not hold the shard yet
    counts as done: it has not heard of the pending ring, so it has not pulled, and its
    pull will carry this write (handoff.py's barrier)."""
    answer: PeerFuture = asyncio.get_running_loop().create_future()

    def done(sent: PeerFuture) -> None:
        if answer.done():
            return
        if sent.cancelled():
            answer.cancel()
            return
        error = sent.exception()
        if error is None:
            answer.set_result(sent.result())
        elif NOT_HELD in str(error):
            answer.set_result(None)
        else:
            answer.set_exception(error)

    future.add_done_callback(done)
    return answer


def _sole_actor(delta: PNCounter) -> str | None:
    """The one actor whose slot `delta` holds, or None if it holds others too (slots of two
    actors of this node, around a rotation), when it must travel as a whole state."""
    p, n = delta.p.slots, delta.n.slots
    actor = next(iter(p or n), None)
    if actor is None or len(p) > 1 or len(n) > 1 or (p and n and actor not in n):
        return None
    return actor


def _record(answers: dict[str, PNCounter | None], node_id: str, future: PeerFuture) -> None:
    if not future.cancelled() and future.exception() is None:
        stated = future.result()
        answers[node_id] = None if stated is None else stated[0]


def _ignore(_: object) -> None:
    pass


def _send_slots(
    actor: str,
    items: list[tuple[Key, int, int]],
    keys: list[Key],
    link: PeerLink,
    trace: str | None,
) -> PeerFuture:
    return link.replicate_slots(actor, items, trace, keys)


def _send_states(
    items: list[tuple[Key, PNCounter, Mapping[str, Receipt] | None]],
    link: PeerLink,
    trace: str | None,
) -> PeerFuture:
    return link.replicate_many(items, trace)


def _ignore_failure(future: PeerFuture) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so a failed background write is not reported twice

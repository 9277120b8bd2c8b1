"""Gossip: membership, ring state, liveness and anti-entropy, every gossip interval.

Each round this node sends every peer (and any seed it has not met) its view, ring state,
hand-off progress and a digest per shard they share. The peer merges what it heard, answers
with its own, and per-counter fingerprints of the shards whose digests differ; this node
then pushes what differs and merges what the peer answers it holds more of
(node/cluster/anti_entropy.py). Convergence after any fault needs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection
from typing import Any, Protocol

from node.base.errors import PeerError
from node.cluster import readiness, wire
from node.cluster.anti_entropy import AntiEntropy
from node.cluster.handoff import Handoff, check_ring_shape
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.cluster.wire import FEATURES, ProtocolError
from node.obs.supervision import Supervisor
from node.storage.store import CounterStore
from ring import Status, View
from ring.claimant import RingState

log = logging.getLogger("counters.gossip")
EXCHANGE_BACKSTOP_S = 0.5  # past an exchange's deadline, before its round cancels it


class TenantCounts(Protocol):
    """What gossip carries for the per-tenant quota (node/coordination/quota.py): this
    node's counts out, each peer's counts in."""

    def own_counts(self, max_age_s: float = 0.0) -> dict[str, int]: ...

    def heard(self, peer: str, raw: Any) -> None: ...


class Gossip:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        pool: PeerPool,
        handoff: Handoff,
        quota: TenantCounts,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.cluster = cluster
        self.supervisor = supervisor  # records the hand-off steps' errors (node/obs/)
        self.quota = quota
        self.store = store
        self.pool = pool
        self.handoff = handoff
        self.rounds = 0
        self.anti_entropy = AntiEntropy(store, cluster.config.sync_shards_per_round)
        self._ring_wire: tuple[RingState, dict[str, object]] | None = None
        self._ring_heard: tuple[object, RingState] | None = None  # the last ring parsed
        # the ring state the shared shards were made from, and peer -> those shards
        self._shared: tuple[RingState | None, dict[str, list[int]]] = (None, {})
        self._handoff: asyncio.Task[None] | None = None
        # peer -> the exchange a coordinator asked for out of turn (see refresh)
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    @property
    def repaired_keys(self) -> int:
        return self.anti_entropy.repaired_keys

    @property
    def divergent_shards(self) -> int:
        return self.anti_entropy.divergent_shards

    @property
    def deferred_shards(self) -> int:
        return self.anti_entropy.deferred_shards

    async def stop(self) -> None:
        tasks = [t for t in [self._handoff, *self._refreshing.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh(self, node_ids: Collection[str]) -> None:
        """Exchange with these peers now, not at the next round: a coordinator whose view
        still shows a replica joining learns at once whether it serves (node/cluster/
        readiness.py says why). One exchange per peer at a time, shared by every request
        that asks meanwhile. No pause between exchanges: a peer that turned up just after
        the last one answered must not cost a request a refusal, and while a peer really is
        still recovering this is one exchange in flight to it, however many requests wait."""
        cluster = self.cluster
        waiting = []
        for node_id in node_ids:
            task = self._refreshing.get(node_id)
            if task is None or task.done():
                address = cluster.address_of(node_id)
                if address is None:
                    continue
                task = asyncio.create_task(self.exchange(node_id, address), name="refresh")
                task.add_done_callback(self._refreshed)
                self._refreshing[node_id] = task
            waiting.append(task)
        if waiting:
            # wait, not gather: a cancelled request must not cancel an exchange others share
            await asyncio.wait(waiting, timeout=max(cluster.config.gossip_interval_s * 2, 1.0))

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        for node_id, running in list(self._refreshing.items()):
            if running is task:
                del self._refreshing[node_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("view refresh failed", exc_info=task.exception())

    async def run(self) -> None:
        interval = self.cluster.config.gossip_interval_s
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception:
                log.exception("gossip round failed")
            elapsed = time.monotonic() - started
            # jitter keeps nodes started together from gossiping in lockstep
            await asyncio.sleep(max(0.0, interval - elapsed) * random.uniform(0.8, 1.2))

    async def round(self) -> None:
        cluster = self.cluster
        cluster.refresh_down()
        known = {m.address for m in cluster.peers()}
        seeds = self._seeds()
        targets: list[tuple[str | None, str]] = [(m.node_id, m.address) for m in cluster.peers()]
        targets += [(None, s) for s in seeds if s not in known]
        await asyncio.gather(
            *(self._bounded_exchange(node_id, address) for node_id, address in targets),
            return_exceptions=True,
        )
        cluster.step()
        keep = {m.address for m in cluster.peers()} | set(self._seeds())  # as of now
        for address in await self.pool.keep_only(keep):
            log.info("closed the link to %s: no member there any more", address)
        if self._handoff is None or self._handoff.done():
            # Pulls may take long; they run beside the rounds, which keep heartbeats going.
            if self.supervisor is None:
                self._handoff = asyncio.create_task(self.handoff.step(), name="handoff")
                self._handoff.add_done_callback(_log_failure)
            else:
                step = self.supervisor.run_once("handoff", self.handoff.step)
                self._handoff = asyncio.create_task(step, name="handoff")
        if self.store.unweighed() and not readiness.reasons(cluster):
            # What a start loaded unweighed (node/storage/store_load.py), once the node
            # serves: a shard per loop turn. Not before: the load's pages each touch every
            # shard, and a node waits for its own status up, set by these rounds.
            await self.store.weigh_unweighed()
        self.rounds += 1

    async def _bounded_exchange(self, node_id: str | None, address: str) -> None:
        """One exchange, with a deadline: one slow or frozen peer must not hold back the
        round. The exchange is made here, when the task runs, so a round cancelled before
        its tasks start leaves no coroutine that was never awaited. Its calls time out by
        themselves at the deadline (a peer that does not answer is a PeerError, which
        tells its link too); cancelling them is only the backstop, a little later."""
        async with asyncio.timeout(self._exchange_timeout() + EXCHANGE_BACKSTOP_S):
            await self.exchange(node_id, address)

    def _exchange_timeout(self) -> float:
        return max(self.cluster.config.gossip_interval_s * 2, 1.0)

    def _seeds(self) -> list[str]:
        """Seeds to gossip with, but not this node nor one removed from the cluster: a
        removed node's address is not called again (a new node there joins by itself)."""
        cluster = self.cluster
        removed = {m.address for m in cluster.view.members.values() if m.status is Status.REMOVED}
        return [s for s in cluster.config.seeds if s != cluster.config.address and s not in removed]

    # -- messages ---------------------------------------------------------------------------

    def _ring_to_wire(self) -> dict[str, object]:
        state = self.cluster.state
        if self._ring_wire is None or self._ring_wire[0] is not state:
            self._ring_wire = (state, state.to_wire())
        return self._ring_wire[1]

    def _ring_from_wire(self, raw: object) -> RingState:
        """RingState.from_wire, skipped for the ring nearly every message carries: ours, or
        the one parsed last (a comparison of 9 us against 0.7 ms to parse and check 256
        shards, four times a gossip round)."""
        if self._ring_wire is not None and raw == self._ring_wire[1]:
            return self._ring_wire[0]
        if self._ring_heard is not None and raw == self._ring_heard[0]:
            return self._ring_heard[1]
        state = RingState.from_wire(raw)
        self._ring_heard = (raw, state)
        return state

    def _shared_shards(self, peer: str | None) -> list[int]:
        """The shards both hold (current or pending ring), sorted; remembered per peer for
        the ring state they were made from: asked four times an exchange, 0.6 ms each."""
        if peer is None:
            return []
        state = self.cluster.state
        if self._shared[0] is not state:
            self._shared = (state, {})
            self.anti_entropy.forget_all_but({m.node_id for m in self.cluster.peers()})
        found = self._shared[1].get(peer)
        if found is not None:
            return found
        me = self.cluster.node_id
        shards = set()
        for ring in (state.current, state.pending):
            if ring is None:
                continue
            for shard in ring.shards_of(me):
                if peer in ring.table[shard]:
                    shards.add(shard)
        found = self._shared[1][peer] = sorted(shards)
        return found

    def message(self, peer: str | None, reply: bool = False) -> dict[str, Any]:
        """Our view, ring, counts and digests for `peer`; a `reply` carries only the total
        of our digests (an exchange compares the digests its initiator sent)."""
        cluster = self.cluster
        shared = self._shared_shards(peer)
        if reply:
            digests: dict[str, Any] = {"total": self.anti_entropy.total(shared)}
        else:
            now_ms = int(time.time() * 1000)
            digests = self.anti_entropy.digests(shared, now_ms, cluster.recovered, peer)
        message: dict[str, Any] = {
            "from": cluster.node_id,
            "view": cluster.view.to_wire(),
            "ring": self._ring_to_wire(),
            "synced": cluster.synced_to_wire(),
            **digests,
            "tenants": self.quota.own_counts(max_age_s=cluster.config.gossip_interval_s / 2),
            "features": list(FEATURES),
        }
        persister = self.handoff.persister
        cluster.own_durable_down = not persister.healthy and persister.durable.shared
        if cluster.own_durable_down:
            message["durable"] = "down"  # the others write our slots meanwhile
        if cluster.recovered:  # the slots it holds are all loaded: what identity.py trusts
            message["incarnations"] = self.store.incarnations()
        return message

    def absorb(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise ProtocolError("gossip body must be a map")
        try:
            sender = body["from"]
            view = View.from_wire(body["view"])
            state = self._ring_from_wire(body["ring"])
            synced = body["synced"]
            if not isinstance(sender, str) or not isinstance(synced, dict):
                raise ProtocolError("bad gossip header")
            marks = {}
            for node_id, entry in synced.items():
                if not isinstance(entry, list) or len(entry) != 2:
                    raise ProtocolError("a hand-off mark is [stamp, mark]")
                stamp, mark = entry
                if type(stamp) is not int or not isinstance(mark, str):
                    raise ProtocolError("bad hand-off mark")
                marks[node_id] = (stamp, mark)
        except (KeyError, ValueError) as error:
            raise ProtocolError(f"bad gossip: {error}") from None
        try:
            check_ring_shape(state, self.cluster)  # Q and N as ours, or the peer is refused
        except ProtocolError as error:
            self.cluster.refuse_peer(sender, str(error))
            raise
        incarnations = body.get("incarnations")
        if incarnations is not None:
            if not isinstance(incarnations, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in incarnations.items()
            ):
                raise ProtocolError("incarnations are {node id: int}")
        features = body.get("features", [])  # none from a node of an earlier version
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ProtocolError("features are a list of names")
        # a node's own claims about itself count only if it was not removed, or an operator
        # just admitted it again (its reply to an admission says so)
        self.cluster.absorb(view, state, marks, sender, admitted=body.get("admitted") is True)
        if incarnations is not None:
            self.cluster.report(sender, incarnations)
        self.cluster.heard(sender)
        self.cluster.features[sender] = frozenset(features)
        down = self.cluster.durable_down
        if (body.get("durable") == "down") != (sender in down):  # replaced, never changed
            self.cluster.durable_down = down ^ {sender}
        self.quota.heard(sender, body.get("tenants"))
        return sender

    # -- both sides of an exchange ----------------------------------------------------------

    def answer(self, body: Any) -> dict[str, Any]:
        """The receiving side: merge what came, send back ours and the differing shards."""
        asked = self.anti_entropy.parse(body)  # validated before anything changes
        if body.get("admit") is True:
            refused = self._admit(body)
            if refused:
                return {"refused": refused}
        sender = self.absorb(body)
        self.anti_entropy.heard_total(sender, asked.total)
        reply = self.message(sender, reply=True)
        shared = self._shared_shards(sender)
        reply.update(self.anti_entropy.fingerprints(asked, shared, self.cluster.recovered, sender))
        if body.get("admit") is True:
            reply["admitted"] = True
        return reply

    def _admit(self, body: dict[str, Any]) -> str | None:
        """Added to a cluster by an operator: drop a ring of its own if it holds nothing;
        refused when the cluster has a member of this id elsewhere that is not removed (a
        node started with a live member's id would take its place in every view)."""
        cluster = self.cluster
        try:
            twin = View.from_wire(body["view"]).get(cluster.node_id)
        except (KeyError, ValueError) as error:
            raise ProtocolError(f"bad gossip: {error}") from None
        if twin and twin.address != cluster.config.address and twin.status != Status.REMOVED:
            return (
                f"the cluster has a member {cluster.node_id} at {twin.address} "
                f"({twin.status.value}): give this node another id, or remove that member "
                f"first (DELETE /admin/nodes/{cluster.node_id}?force=true)"
            )
        me = cluster.view.get(cluster.node_id)
        removed = me is not None and me.status == Status.REMOVED  # back by an operator's word
        if len(self.store) or (set(cluster.state.nodes()) - {cluster.node_id} and not removed):
            return f"{cluster.node_id} already holds counters or belongs to a cluster"
        cluster.reset_for_admission()
        return None

    async def exchange(self, node_id: str | None, address: str) -> None:
        link = self.pool.link(address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._exchange_timeout()  # for all its calls together
        incarnation = self.cluster.incarnation  # what the message tells the peer
        try:
            message = self.message(node_id)
            reply = await link.call(wire.GOSSIP, message, deadline - loop.time())
            sender = self.absorb(reply)
            self.anti_entropy.heard_total(sender, reply.get("total"))
            self.cluster.heard_peer = True
            self.cluster.announced = max(self.cluster.announced, incarnation)
            shared, now_ms = self._shared_shards(sender), int(time.time() * 1000)
            pushes = self.anti_entropy.to_push(reply, message, shared, now_ms)
            await self.anti_entropy.push(link, pushes, deadline)
        except PeerError as error:
            log.debug("gossip with %s failed: %s", node_id or address, error)
        except ProtocolError as error:
            log.warning("bad gossip reply from %s: %s", node_id or address, error)
        else:
            if node_id is not None and sender != node_id:
                log.warning("%s answered as %s", address, sender)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("hand-off step failed", exc_info=task.exception())

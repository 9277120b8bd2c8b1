"""Gossip: membership, ring state, liveness and anti-entropy, every gossip interval.

Each round this node sends every peer (and any seed it has not met) its view, ring state,
hand-off progress and a digest per shard they share. The peer merges what it heard, answers
with its own, and for every shard whose digest differs ships its state and asks for ours:
after one exchange both hold the merge. Convergence after any fault needs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Iterator
from typing import Any, Protocol

from crdt import PNCounter
from node.base.errors import PeerError
from node.base.keys import Key
from node.cluster import wire
from node.cluster.handoff import Handoff, check_ring_shape
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.cluster.wire import ProtocolError
from node.obs.supervision import Supervisor
from node.storage.store import CounterStore
from ring import Status, View
from ring.claimant import RingState

log = logging.getLogger("counters.gossip")
PUSH_BATCH = 2000  # counters per repair frame
PUSH_RECEIPTS = 20_000  # idempotency receipts per repair frame (about 100 bytes each)
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
        self.repaired_keys = 0
        self.divergent_shards = 0  # shared shards whose digests differed, as asked
        self._ring_wire: tuple[RingState, dict[str, object]] | None = None
        # per peer: key weight -> (our share, its share) for keys that differed last time
        self._last_seen: dict[str, dict[int, tuple[int, int]]] = {}
        self._handoff: asyncio.Task[None] | None = None
        # peer -> the exchange a coordinator asked for out of turn (see refresh)
        self._refreshing: dict[str, asyncio.Task[None]] = {}

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

    def _shared_shards(self, peer: str | None) -> list[int]:
        if peer is None:
            return []
        me = self.cluster.node_id
        shards = []
        for ring in (self.cluster.state.current, self.cluster.state.pending):
            if ring is None:
                continue
            for shard in ring.shards_of(me):
                if peer in ring.preference_list(shard):
                    shards.append(shard)
        return sorted(set(shards))

    def message(self, peer: str | None) -> dict[str, Any]:
        cluster = self.cluster
        message: dict[str, Any] = {
            "from": cluster.node_id,
            "view": cluster.view.to_wire(),
            "ring": self._ring_to_wire(),
            "synced": cluster.synced_to_wire(),
            "digests": [[s, self.store.digest(s)] for s in self._shared_shards(peer)],
            "tenants": self.quota.own_counts(max_age_s=cluster.config.gossip_interval_s / 2),
        }
        if cluster.recovered:  # the slots it holds are all loaded: what identity.py trusts
            message["incarnations"] = self.store.incarnations()
        return message

    def absorb(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise ProtocolError("gossip body must be a map")
        try:
            sender = body["from"]
            view = View.from_wire(body["view"])
            state = RingState.from_wire(body["ring"])
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
        # a node's own claims about itself count only if it was not removed, or an operator
        # just admitted it again (its reply to an admission says so)
        self.cluster.absorb(view, state, marks, sender, admitted=body.get("admitted") is True)
        if incarnations is not None:
            self.cluster.report(sender, incarnations)
        self.cluster.heard(sender)
        self.quota.heard(sender, body.get("tenants"))
        return sender

    def _differing(self, body: dict[str, Any], sender: str) -> list[int]:
        """Shared shards whose digests differ, a bounded random sample of them."""
        digests = body.get("digests")
        if not isinstance(digests, list):
            raise ProtocolError("digests must be a list")
        mine = set(self._shared_shards(sender))
        differing = []
        for item in digests:
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError("a digest is [shard, value]")
            shard, theirs = item
            if type(shard) is int and shard in mine and self.store.digest(shard) != theirs:
                differing.append(shard)
        self.divergent_shards += len(differing)
        random.shuffle(differing)  # not always the same shards first when capped
        return sorted(differing[: self.cluster.config.sync_shards_per_round])

    def _shares(self, shards: list[int]) -> list[list[Any]]:
        """[shard, [key weight, share, ...]] for each shard: what the initiator compares."""
        out = []
        for shard in shards:
            flat: list[int] = []
            for _, weight, share in self.store.shard_shares(shard):
                flat += (weight, share)
            out.append([shard, flat])
        return out

    def _stale_at_peer(self, peer: str, raw: Any) -> list[tuple[Key, PNCounter]]:
        """Our counters the peer holds differently, and not just because writes are in flight.

        Under load nearly every shard differs by updates the write path is delivering right
        now, so shipping every differing key would cost more than the writes. A key that
        differs while one side stood still since the last exchange is a real divergence
        (a missed update); we push our state of it, and the peer does the same for its side.
        """
        if not isinstance(raw, list):
            raise ProtocolError("shares must be a list")
        previous = self._last_seen.get(peer, {})
        seen: dict[int, tuple[int, int]] = {}
        stale: list[tuple[Key, PNCounter]] = []
        mine_shared = set(self._shared_shards(peer))
        for item in raw:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
                raise ProtocolError("shares are [shard, [weight, share, ...]]")
            shard, flat = item
            if type(shard) is not int or shard not in mine_shared or len(flat) % 2:
                continue
            theirs = dict(zip(flat[::2], flat[1::2], strict=True))
            for key, weight, share in self.store.shard_shares(shard):
                other = theirs.get(weight, 0)
                if other == share:
                    continue
                seen[weight] = (share, other)
                before = previous.get(weight)
                if before is not None and (before[0] == share or before[1] == other):
                    state = self.store.get(key)
                    if state is not None:
                        stale.append((key, state))
        self._last_seen[peer] = seen
        return stale

    # -- both sides of an exchange ----------------------------------------------------------

    def answer(self, body: Any) -> dict[str, Any]:
        """The receiving side: merge what came, send back ours and the differing shards."""
        if isinstance(body, dict) and body.get("admit") is True:
            refused = self._admit()
            if refused:
                return {"refused": refused}
        sender = self.absorb(body)
        reply = self.message(sender)
        reply["shares"] = self._shares(self._differing(body, sender))
        if isinstance(body, dict) and body.get("admit") is True:
            reply["admitted"] = True
        return reply

    def _admit(self) -> str | None:
        """Added to a cluster by an operator: drop a ring of its own if it holds nothing."""
        cluster = self.cluster
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
            reply = await link.call(wire.GOSSIP, self.message(node_id), deadline - loop.time())
            sender = self.absorb(reply)
            self.cluster.heard_peer = True
            self.cluster.announced = max(self.cluster.announced, incarnation)
            stale = self._stale_at_peer(sender, reply.get("shares", []))
            self.repaired_keys += len(stale)
            for frame in push_frames(self.store, stale, int(time.time() * 1000)):
                left = deadline - loop.time()
                if left <= 0:
                    break  # the rest at the next exchange
                await link.call(wire.PUSH, wire.carried_to_wire(frame), left)
        except PeerError as error:
            log.debug("gossip with %s failed: %s", node_id or address, error)
        except ProtocolError as error:
            log.warning("bad gossip reply from %s: %s", node_id or address, error)
        else:
            if node_id is not None and sender != node_id:
                log.warning("%s answered as %s", address, sender)


def push_frames(
    store: CounterStore,
    stale: list[tuple[Key, PNCounter]],
    now_ms: int,
    counters: int = PUSH_BATCH,
    receipts: int = PUSH_RECEIPTS,
) -> Iterator[list[wire.Carried]]:
    """The repair frames for these counters: each state with its receipts within the window
    (a replica that missed a keyed write must also replay its retry), at most `counters`
    entries and `receipts` receipts a frame. A counter with more receipts than a frame holds
    goes in several entries, each with its state and a share of them; merge makes that
    harmless."""
    frame: list[wire.Carried] = []
    room = receipts
    for key, state in stale:
        held = list(store.receipts_of(key, now_ms).items())
        start = 0
        while True:
            if len(frame) >= counters or (room <= 0 and start < len(held)):
                yield frame
                frame, room = [], receipts
            part = held[start : start + room]
            frame.append((key, state, dict(part)))
            room -= len(part)
            start += len(part)
            if start >= len(held):
                break
    if frame:
        yield frame


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("hand-off step failed", exc_info=task.exception())

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
from typing import Any

from node import protocol
from node.cluster import Cluster
from node.errors import PeerError
from node.handoff import Handoff
from node.peers import PeerPool
from node.protocol import ProtocolError
from node.store import CounterStore
from ring import View
from ring.claimant import RingState

log = logging.getLogger("counters.gossip")


class Gossip:
    def __init__(
        self, cluster: Cluster, store: CounterStore, pool: PeerPool, handoff: Handoff
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.pool = pool
        self.handoff = handoff
        self.rounds = 0
        self.repaired_shards = 0
        self._ring_wire: tuple[RingState, dict[str, object]] | None = None
        self._last_seen: dict[str, dict[int, tuple[int, int]]] = {}
        self._handoff: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._handoff is not None:
            self._handoff.cancel()
            await asyncio.gather(self._handoff, return_exceptions=True)

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
        targets: list[tuple[str | None, str]] = [(m.node_id, m.address) for m in cluster.peers()]
        targets += [(None, s) for s in cluster.config.seeds if s != cluster.config.listen]
        targets = [(n, a) for n, a in targets if n is not None or a not in known]
        # One slow or frozen peer must not hold back the round: each exchange has a deadline.
        deadline = max(cluster.config.gossip_interval_s * 2, 1.0)
        await asyncio.gather(
            *(
                asyncio.wait_for(self.exchange(node_id, address), deadline)
                for node_id, address in targets
            ),
            return_exceptions=True,
        )
        cluster.step()
        if self._handoff is None or self._handoff.done():
            # Pulls may take long; they run beside the rounds, which keep heartbeats going.
            self._handoff = asyncio.create_task(self.handoff.step(), name="handoff")
            self._handoff.add_done_callback(_log_failure)
        self.rounds += 1

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
        return {
            "from": cluster.node_id,
            "view": cluster.view.to_wire(),
            "ring": self._ring_to_wire(),
            "synced": dict(cluster.synced),
            "digests": [[s, self.store.digest(s)] for s in self._shared_shards(peer)],
        }

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
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in synced.items()):
                raise ProtocolError("bad synced map")
        except (KeyError, ValueError) as error:
            raise ProtocolError(f"bad gossip: {error}") from None
        if state.current.shards != self.cluster.config.shards:
            raise ProtocolError("peer runs a different shard count")
        self.cluster.absorb(view, state, synced)
        self.cluster.heard(sender)
        return sender

    def _differing(self, body: dict[str, Any], sender: str) -> list[int]:
        """Shards whose digests differ and did not both move since the last exchange.

        A shard written on both sides right now differs only by updates in flight, which the
        write path is delivering; shipping it every round would cost more than the writes.
        A real divergence shows as a difference while one side stays still.
        """
        digests = body.get("digests")
        if not isinstance(digests, list):
            raise ProtocolError("digests must be a list")
        mine = set(self._shared_shards(sender))
        previous = self._last_seen.get(sender, {})
        seen: dict[int, tuple[int, int]] = {}
        differing = []
        for item in digests:
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError("a digest is [shard, value]")
            shard, theirs = item
            if shard not in mine or type(theirs) is not int:
                continue
            ours = self.store.digest(shard)
            seen[shard] = (ours, theirs)
            if ours == theirs:
                continue
            before = previous.get(shard)
            if before is not None and (before[0] == ours or before[1] == theirs):
                differing.append(shard)
        self._last_seen[sender] = seen
        random.shuffle(differing)  # not always the same shards first when capped
        return sorted(differing[: self.cluster.config.sync_shards_per_round])

    def _entries(self, shards: list[int]) -> list[list[Any]]:
        return protocol.entries_to_wire(e for s in shards for e in self.store.shard_entries(s))

    def _merge_entries(self, raw: Any, shards: list[int]) -> None:
        allowed = set(shards)
        entries = protocol.entries_from_wire(raw)
        for key, state in entries:
            if self.cluster.shard_of(key) in allowed:
                self.store.merge(key, state)

    # -- both sides of an exchange ----------------------------------------------------------

    def answer(self, body: Any) -> dict[str, Any]:
        """The receiving side: merge what came, send back ours and the differing shards."""
        if isinstance(body, dict) and body.get("admit") is True:
            refused = self._admit()
            if refused:
                return {"refused": refused}
        sender = self.absorb(body)
        differing = self._differing(body, sender)
        if differing:
            self.repaired_shards += len(differing)
        reply = self.message(sender)
        reply["entries"] = self._entries(differing)
        reply["want"] = differing
        return reply

    def _admit(self) -> str | None:
        """Added to a cluster by an operator: drop a ring of its own if it holds nothing."""
        cluster = self.cluster
        if len(self.store) or set(cluster.state.nodes()) - {cluster.node_id}:
            return f"{cluster.node_id} already holds counters or belongs to a cluster"
        cluster.reset_for_admission()
        return None

    async def exchange(self, node_id: str | None, address: str) -> None:
        link = self.pool.link(address)
        timeout = max(self.cluster.config.gossip_interval_s * 2, 1.0)
        try:
            reply = await link.call(protocol.GOSSIP, self.message(node_id), timeout)
            sender = self.absorb(reply)
            self.cluster.heard_peer = True
            want = protocol.shards_from_wire(reply.get("want"), self.cluster.config.shards)
            self._merge_entries(reply.get("entries"), want)
            if want:
                await link.call(protocol.PUSH, self._entries(want), timeout)
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

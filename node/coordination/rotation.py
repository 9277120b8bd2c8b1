"""A fresh actor for this node when one of its slots fills (issue 11).

A slot (the P or N total of one actor in one counter) is a uint64, but the value is their
difference: alternating +2**62 and -2**62 fills P after four increments while the value
stays near 0. Refusing then (422) would make the counter unusable on this node for good. So
`crdt` says SlotFullError, and the node moves to incarnation K' > K and applies the same
delta under actor `node_id:K'`, whose slot is empty in every counter (one delta is at most
2**63, which an empty slot holds). A counter whose value is in range thus accepts every
delta that keeps it in range; only a value leaving int64 is refused, as before.

Why this is safe while serving:
- K' is new. The node serves, so its K is proven above every incarnation its id used
  (node/cluster/identity.py), and K' > K is written to the data dir (fsync'd) and to the
  durable replica before any increment uses it, as a start writes its own; if the durable
  replica knew a higher one, K' goes above that. If the durable replica does not answer,
  the data dir holds K', and a later start that lost that dir too still finds any slot of
  K' that survives (identity.py's argument (b)): no record is weaker than at a start.
- Nothing is lost or doubled. The old slot keeps its totals in every replica; nothing more
  is added to it. value = sum(P) - sum(N) over all actors, so moving on changes no value.
- Slots stay labelled. Every increment reads the actor once, applies its delta under it and
  replicates the slot of the delta it built, labelled with that delta's own actor
  (Replicator.write), so a rotation between applying and sending, or while other requests
  are in flight, cannot send one actor's totals under another's name.
- Once per fill. Requests that hit full slots of the same actor together rotate once: a
  rotation away from an actor the node has already left returns at once.

Cost: an fsync and one durable round trip per rotation (rare: at least two maximal deltas in
one direction per slot), and one more slot in each counter incremented afterwards. Slots of
departed incarnations stay until compaction exists (DESIGN.md, "Later"); a counter can hold
at most crdt.codec.MAX_ACTORS actors per half.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from crdt import SlotFullError
from node.base.errors import Overflow, RefusedToStart, ServerError
from node.cluster.membership import Cluster
from node.storage.durable import DurableError, DurableReplica
from node.storage.incarnation import next_incarnation

log = logging.getLogger("counters.rotation")
MAX_ROTATIONS = 8  # fresh actors one op may take before it gives up (others raced it)
T = TypeVar("T")


class ActorRotation:
    """Moves this node to a new, persisted incarnation when a slot of its actor fills."""

    def __init__(self, cluster: Cluster, durable: DurableReplica) -> None:
        self.cluster = cluster
        self.durable = durable
        self.rotations = 0  # for metrics and tests
        self._lock = asyncio.Lock()

    async def away_from(self, full_actor: str) -> None:
        """Make sure this node's actor is no longer `full_actor` (the actor whose slot
        filled); ServerError, with nothing applied, if no new incarnation could be stored."""
        async with self._lock:
            cluster = self.cluster
            if cluster.actor != full_actor:
                return  # another request already moved on
            incarnation = await self._persist(cluster.incarnation + 1)
            if incarnation > cluster.incarnation:
                cluster.rotate(incarnation)
                self.rotations += 1
                log.info("a slot of %s filled; moved to actor %s", full_actor, cluster.actor)

    async def apply_fresh(self, full_actor: str, apply: Callable[[str], T]) -> tuple[str, T]:
        """(actor, apply(actor)) under a fresh actor, once this node has moved away from
        full_actor. `apply` runs right after the move, with no await in between, so the
        actor it is given is the node's actor when it applies."""
        for _ in range(MAX_ROTATIONS):
            await self.away_from(full_actor)
            full_actor = self.cluster.actor
            try:
                return full_actor, apply(full_actor)
            except SlotFullError:
                continue  # requests in flight filled the fresh slot meanwhile: move again
        raise Overflow(f"this node's slots of the counter kept filling ({MAX_ROTATIONS} moves)")

    async def _persist(self, at_least: int) -> int:
        """A new incarnation >= at_least, in the data dir and (if it answers) the durable
        replica, before it is used."""
        node_id = self.cluster.node_id
        incarnation = self._persist_locally(at_least)
        try:
            known = await self.durable.last_incarnation(node_id, incarnation)
            if known >= incarnation:
                incarnation = self._persist_locally(known + 1)
                await self.durable.last_incarnation(node_id, incarnation)
        except DurableError as error:
            log.warning("new incarnation %d kept in the data dir only: %s", incarnation, error)
        return incarnation

    def _persist_locally(self, at_least: int) -> int:
        try:
            return next_incarnation(self.cluster.config.data_path, at_least=at_least)
        except (OSError, RefusedToStart) as error:
            raise ServerError(
                f"a slot of this node filled and no new incarnation could be stored ({error});"
                " nothing applied",
                may_have_applied=False,
            ) from None

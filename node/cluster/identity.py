"""Actor identity: a node takes writes only under an incarnation it has proven new.

An actor id `node_id:K` names one slot in every counter. If a node took writes under a K it
had used before, and some replica still held that slot at a higher value than the node
recovered, the new increments would vanish into the max merge (issue 11: a node back with
an empty data dir recovers its slot at 50 from one peer, acknowledges 5 increments, and a
paused peer holding the slot at 60 later swallows them). So before it becomes ready a node
proves that its incarnation K is above every incarnation its id ever used.

What a node may learn, all gathered by recovery and gossip before the rule runs:
- its records: the data dir's (node/storage/incarnation.py) and, when the durable replica
  lives outside the data dir (Redis), that replica's `last_incarnation`;
- peers' views: a peer remembers our member entry at version K' * VERSION_STRIDE + changes,
  and a version above the one we announce is a life we do not remember;
- slots: any `node_id:K'` slot in the states recovered from the durable replica and peers,
  and each recovered peer's report (gossip "incarnations") of the highest K' of each node
  id among all the slots its store holds.

The rule (`decide`, pure): let `seen` be the highest of all those. If seen >= K, move to
seen + 1 (persisted to the data dir and the durable replica before use) and decide again.
Else K is proven, and the node may become ready, when:
1. it has told a peer its current K (a gossip exchange it started since it took K), unless
   it has no peers, and a durable replica outside the data dir records K; and
2. either a complete record holds: the data dir's record survived since a proven start, or
   the durable replica outside the data dir recorded K; or every other member (of the view
   and the ring, not removed) has sent it a report since it started.

Why that proves K new. An incarnation is used only by a node that became ready under it,
and by (1) that node first wrote it to its data dir and, with Redis, to Redis, and told a
peer. (a) A complete record holds every incarnation used before, so K above it is new; a
data dir that finds no record at start marks itself unproven until a proof succeeds, so a
second crash does not make the file it wrote look like a history. (b) Without a complete
record, a used incarnation K' can matter only if a slot `node_id:K'` survives somewhere
(a slot that survives nowhere cannot swallow anything). A surviving slot is in some member's
store or durable copy: the members that recovered report it, and recovery loads our own
shards from the durable replica and pulls them from every live replica. A member that may
hold one and has not reported is exactly what the node cannot rule out, so it waits for it
(naming it in /readyz); an operator who knows the member is gone for good removes it. Peers'
memory of our entry catches used incarnations even where no slot of them survived.

Assumptions, stated: a node id runs in one place at a time; a data dir is not restored from
an older copy without being emptied (a restored copy that looks complete is caught only by
what peers remember or hold, which the rule always checks); the durable replica outside the
data dir is not wiped while data dirs are lost. A node with no peers and no record (a new
single node) proves nothing and says so by leaving the data dir unproven: if an operator
later admits it to a cluster, it proves itself again against that cluster's members.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from node.cluster.membership import Cluster
from node.storage.durable import DurableError, DurableReplica
from node.storage.incarnation import Start, mark_proven, mark_unproven, next_incarnation
from node.storage.store import CounterStore
from ring import Status

log = logging.getLogger("counters.identity")


class Action(enum.Enum):
    PROCEED = "proceed"  # the incarnation is proven new: the node may become ready
    ROTATE = "rotate"  # move to `Decision.incarnation`, then decide again
    WAIT = "wait"  # not sure yet: stay not ready, for `Decision.reason`


@dataclass(frozen=True)
class Evidence:
    """What a node learned about its own id's past, for `decide`."""

    node_id: str
    incarnation: int  # the one it holds now
    seen: int  # the highest incarnation of node_id learned from anywhere else (0: none)
    complete_record: bool  # the data dir's or an outside durable replica's record is complete
    durable_outside: bool  # the durable replica outlives the data dir (Redis)
    durable_recorded: bool  # it holds `incarnation`
    members: frozenset[str]  # the other members, not removed (view and ring)
    reported: frozenset[str]  # members whose report of slots arrived since the start
    announced: bool  # a peer heard `incarnation` from us


@dataclass(frozen=True)
class Decision:
    action: Action
    incarnation: int
    reason: str = ""  # why not ready, for /readyz and the log
    topic: str = ""  # a stable tag of the reason, so the log says it once


def decide(evidence: Evidence) -> Decision:
    """The rule of this module's docstring: proceed, rotate or wait."""
    node_id, current = evidence.node_id, evidence.incarnation
    if evidence.seen >= current:
        return Decision(
            Action.ROTATE,
            evidence.seen + 1,
            f"incarnation {current} is not new: {node_id}:{evidence.seen} was seen",
            "rotate",
        )
    if evidence.durable_outside and not evidence.durable_recorded:
        return Decision(
            Action.WAIT,
            current,
            f"incarnation {current} not yet recorded in the durable replica",
            "durable",
        )
    if evidence.members and not evidence.announced:
        return Decision(
            Action.WAIT, current, f"incarnation {current} not yet announced to a peer", "announce"
        )
    if evidence.complete_record:
        return Decision(Action.PROCEED, current)
    missing = sorted(evidence.members - evidence.reported)
    if missing:
        return Decision(
            Action.WAIT,
            current,
            f"incarnation {current} not proven new: the data dir had no complete record, so "
            f"waiting to hear from {', '.join(missing)}, which may hold a later slot of "
            f"{node_id} (remove a member that is gone for good)",
            "members",
        )
    return Decision(Action.PROCEED, current)


class Identity:
    """Runs `decide` before the node becomes ready, and carries out its decisions."""

    def __init__(
        self, cluster: Cluster, store: CounterStore, durable: DurableReplica, start: Start
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.durable = durable
        self._data_dir = cluster.config.data_path
        self._complete = start.complete_dir or (start.durable_outside and start.durable_recorded)
        self._durable_outside = start.durable_outside
        self._durable_recorded = start.durable_recorded
        self._durable_seen = 0  # the highest incarnation the durable replica reported
        self._logged_topic = ""

    def evidence(self) -> Evidence:
        cluster = self.cluster
        me = cluster.node_id
        members = {m.node_id for m in cluster.view.members.values() if m.status != Status.REMOVED}
        members |= set(cluster.state.nodes())
        members.discard(me)
        seen = max(
            cluster.seen_incarnation,
            self.store.incarnations().get(me, 0),
            self._durable_seen,
            max(cluster.reports.values(), default=0),
        )
        return Evidence(
            node_id=me,
            incarnation=cluster.incarnation,
            seen=seen,
            complete_record=self._complete,
            durable_outside=self._durable_outside,
            durable_recorded=self._durable_recorded,
            members=frozenset(members),
            reported=frozenset(cluster.reports),
            announced=cluster.announced >= cluster.incarnation,
        )

    async def settle(self) -> bool:
        """One step toward a proven incarnation; True once proven (the node may serve)."""
        cluster = self.cluster
        if not self._durable_recorded:
            await self._record(cluster.incarnation)
        decision = decide(self.evidence())
        if decision.action is Action.ROTATE:
            await self._rotate(decision)
            decision = decide(self.evidence())
        if decision.action is Action.WAIT:
            cluster.identity_reason = decision.reason
            # announcing takes one gossip round: not worth a line of its own
            if decision.topic not in (self._logged_topic, "announce"):
                self._logged_topic = decision.topic
                log.warning("not ready as %s: %s", cluster.actor, decision.reason)
            return False
        if decision.action is Action.PROCEED:
            if self._complete or self.evidence().members:
                mark_proven(self._data_dir)  # a proof by the members completes the record
            cluster.identity_reason = ""
            cluster.proven = True
            self._logged_topic = ""
            log.info("incarnation proven new: actor %s", cluster.actor)
            return True
        return False

    async def _record(self, incarnation: int) -> None:
        """Record the incarnation in the durable replica; note a higher one it knew."""
        try:
            known = await self.durable.last_incarnation(self.cluster.node_id, incarnation)
        except DurableError:
            self._durable_recorded = False
            return
        self._durable_seen = max(self._durable_seen, known)
        self._durable_recorded = known < incarnation

    async def _rotate(self, decision: Decision) -> None:
        cluster = self.cluster
        old = cluster.actor
        # Evidence above the records proves them incomplete: trust only what members say.
        self._complete = False
        mark_unproven(self._data_dir)
        incarnation = next_incarnation(self._data_dir, at_least=decision.incarnation)
        await self._record(incarnation)
        cluster.rotate(incarnation)
        log.warning("%s; moved from actor %s to %s", decision.reason, old, cluster.actor)

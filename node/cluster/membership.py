"""This node's picture of the cluster: membership view, ring state, hand-off progress, liveness.

Everything here is in memory and changed only by gossip, admin operations and the node's own
progress; the pure rules live in ring/ (View.merge, RingState.merge, claimant.next_state).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from node.base.config import Config
from node.base.errors import RefusedToStart
from node.base.keys import Key
from ring import FailureDetector, Member, Ring, RingError, Status, View
from ring.claimant import RingState, claimant, departed, next_state

log = logging.getLogger("counters.cluster")

# A member's version is incarnation * stride + changes since that start, so the entry a node
# announces after a restart always outranks what others remember of its previous life.
VERSION_STRIDE = 1_000_000
RING_FILE = "ring.json"
# This node's own admin status (leaving, removed), so a restart does not forget it: a node
# that restarted as joining would cancel its leave, or rejoin after being removed.
STATUS_FILE = "membership.json"
REMEMBERED = frozenset({Status.LEAVING, Status.REMOVED})
SERVING = frozenset({Status.UP, Status.LEAVING})
SHARD_CACHE_SIZE = 1_000_000  # keys whose shard is remembered (the hash is the hot cost)


class Cluster:
    def __init__(self, config: Config, incarnation: int) -> None:
        self.config = config
        self.node_id = config.node_id
        self.incarnation = incarnation
        self.actor = f"{config.node_id}:{incarnation}"
        self._status_file = config.data_path / STATUS_FILE
        self._remembered = self._load_status()  # leaving or removed in an earlier life
        start = self._remembered or Status.JOINING
        me = Member(config.node_id, config.address, start, incarnation * VERSION_STRIDE)
        self.view = View.empty().with_member(me)
        self._admitted = False  # admitted by an operator since this start (reset_for_admission)
        self._ring_file = config.data_path / RING_FILE
        self.state = self._load_ring()
        # node -> the hand-off mark it announced, and the stamp that orders its announcements:
        # stamps start at incarnation * stride, so a restarted node's empty mark outranks
        # what it announced before it lost its memory.
        self.synced: dict[str, str] = {config.node_id: ""}
        self.synced_stamps: dict[str, int] = {config.node_id: incarnation * VERSION_STRIDE}
        self.detector = FailureDetector(timeout_s=config.failure_timeout_s)
        self.down: frozenset[str] = frozenset()
        self.recovered = False
        # Identity (node/cluster/identity.py): the node serves only once its incarnation is
        # proven new; what it learned toward that, and why it is not proven yet.
        self.proven = False
        self.identity_reason = ""
        self.seen_incarnation = 0  # the highest of ours in peers' views, above what we announce
        self.reports: dict[str, int] = {}  # peer -> highest incarnation of ours in its slots
        self.announced = 0  # the highest incarnation of ours a peer acknowledged hearing
        self.heard_peer = not [s for s in config.seeds if s != config.address]
        self._replicas = config.replicas
        # peer -> why its gossip is refused (a ring of another shard or replica count)
        self.refused: dict[str, str] = {}
        # node id -> what its gossip said it does (wire.FEATURES): nothing until heard
        self.features: dict[str, frozenset[str]] = {}
        # nodes whose last gossip said they cannot write their durable copy (a shared Redis
        # they cannot reach): the others write their slots meanwhile (slot_owners.py)
        self.durable_down: frozenset[str] = frozenset()
        self.own_durable_down = False  # ours, as our gossip last said it
        # tenant -> namespace -> name -> shard: nested, so that an entry costs a dict slot
        # and no tuple, and its name is the string the store holds already (issue 13)
        self._shards: dict[str, dict[str, dict[str, int]]] = {}
        self._shards_cached = 0

    # -- placement --------------------------------------------------------------------------

    def shard_of(self, key: Key) -> int:
        spaces = self._shards.get(key[0])
        names = None if spaces is None else spaces.get(key[1])
        if names is not None:
            shard = names.get(key[2])
            if shard is not None:
                return shard
        if self._shards_cached >= SHARD_CACHE_SIZE:
            self._shards.clear()  # Q never changes, so dropping the cache is only a cost
            self._shards_cached, names = 0, None
        if names is None:
            names = self._shards.setdefault(key[0], {}).setdefault(key[1], {})
        shard = names[key[2]] = self.state.current.shard_of(*key)
        self._shards_cached += 1
        return shard

    def replicas(self, shard: int) -> tuple[str, ...]:
        """The shard's preference list (N nodes, fewer in a smaller cluster), coordinator first."""
        return self.state.current.table[shard]

    def pending_replicas(self, shard: int) -> tuple[str, ...] | None:
        """The shard's replicas in the pending ring when one is pending and moves the shard
        (they differ from the current ones); else None."""
        pending = self.state.pending
        if pending is None:
            return None
        after = pending.preference_list(shard, self._replicas)
        return None if after == self.replicas(shard) else after

    def write_targets(self, shard: int) -> tuple[str, ...]:
        """Current replicas, then those about to receive the shard in a hand-off."""
        pending = self.state.pending
        current = self.replicas(shard)
        if pending is None:
            return current
        extra = [n for n in pending.preference_list(shard, self._replicas) if n not in current]
        return current + tuple(extra)

    def holds(self, shard: int) -> bool:
        """Whether this node replicates the shard, or receives it in the pending ring."""
        me, state = self.node_id, self.state
        if shard in state.current.shards_of(me):
            return True
        return state.pending is not None and shard in state.pending.shards_of(me)

    def coordinator(self, shard: int, reachable: Callable[[str], bool] | None = None) -> str | None:
        """The first replica that serves requests; else the first live other one (it may have
        caught up already and our view not heard so yet), never this node while it is not
        ready itself; None when there is none. `reachable`, if given, passes over nodes our
        own link cannot reach (liveness per direction), unless no other choice is left."""
        replicas = self.replicas(shard)
        if reachable is not None:
            ours = [n for n in replicas if n == self.node_id or reachable(n)]
            if len(ours) < len(replicas):
                chosen = self._first_serving(ours)
                if chosen is not None:
                    return chosen
        return self._first_serving(replicas)

    def supports(self, node_id: str, feature: str) -> bool:
        """Whether node_id does `feature` (wire.FEATURES): this node does; a peer, once its
        gossip said so."""
        return node_id == self.node_id or feature in self.features.get(node_id, ())

    def placement(self) -> tuple[object, ...]:
        """Everything coordinator(shard) answers from when not given `reachable`: the view,
        the ring, the nodes suspected down, whether this node is ready, and the nodes whose
        durable copy is down. Each is replaced, never changed in place, so two equal
        placements give every shard the same coordinator (equal parts compare by identity
        first: an unchanged placement costs five checks)."""
        return (self.view, self.state, self.down, self.ready, self.durable_down)

    def _first_serving(self, replicas: Sequence[str]) -> str | None:
        if self.durable_down and self.config.durability == "sync":
            # one that can make a write durable first: the others refuse sync writes
            for node_id in replicas:
                if self.serving(node_id) and node_id not in self.durable_down:
                    return node_id
        for node_id in replicas:
            if self.serving(node_id):
                return node_id
        for node_id in replicas:
            if node_id != self.node_id and self.alive(node_id):
                return node_id
        return None

    # -- liveness ---------------------------------------------------------------------------

    def alive(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        member = self.view.get(node_id)
        return member is not None and member.status != Status.REMOVED and node_id not in self.down

    def status_of(self, node_id: str) -> str:
        """node_id's status as this node sees it: its view's, or "down" for a member its
        failure detector suspects; "unknown" for a stranger."""
        member = self.view.get(node_id)
        if member is None:
            return "unknown"
        if member.status != Status.REMOVED and node_id != self.node_id and node_id in self.down:
            return Status.DOWN.value
        return member.status.value

    def serving(self, node_id: str) -> bool:
        """Alive and caught up, so its state counts toward a read quorum."""
        if node_id == self.node_id:
            return self.ready
        member = self.view.get(node_id)
        return member is not None and member.status in SERVING and node_id not in self.down

    @property
    def ready(self) -> bool:
        me = self.view.get(self.node_id)
        return self.recovered and self.proven and me is not None and me.status in SERVING

    def heard(self, node_id: str, now: float | None = None) -> None:
        self.detector = self.detector.heard(node_id, time.monotonic() if now is None else now)
        if node_id in self.down:
            self.down = self.down - {node_id}
            log.info("peer %s is back", node_id)

    def refresh_down(self, now: float | None = None) -> None:
        suspects = self.detector.suspects(time.monotonic() if now is None else now)
        for node_id in suspects - self.down:
            log.warning("peer %s not heard for %.1fs: down", node_id, self.config.failure_timeout_s)
        self.down = frozenset(suspects)

    def address_of(self, node_id: str) -> str | None:
        member = self.view.get(node_id)
        return None if member is None else member.address

    def peers(self) -> list[Member]:
        return [
            m
            for m in self.view.members.values()
            if m.node_id != self.node_id and m.status != Status.REMOVED
        ]

    # -- changes ----------------------------------------------------------------------------

    def absorb(
        self,
        view: View,
        state: RingState,
        synced: Mapping[str, tuple[int, str]],
        sender: str | None = None,
        admitted: bool = False,
    ) -> None:
        """Merge a peer's view, ring state and hand-off marks. `sender`'s claims about
        itself are ignored while this view has it removed, unless an operator just admitted
        it again (`admitted`): a removed node that restarts must not rejoin by itself."""
        view = self._trusted(view, sender, admitted)
        now = time.monotonic()
        theirs, mine = view.get(self.node_id), self.view.get(self.node_id)
        if theirs is not None and mine is not None and theirs.version > mine.version:
            # a life of ours that we do not remember (or events applied to it by others)
            self.seen_incarnation = max(self.seen_incarnation, theirs.version // VERSION_STRIDE)
        for node_id in view.members:
            if self.view.get(node_id) is None and node_id != self.node_id:
                self.detector = self.detector.heard(node_id, now)  # a grace period to be heard
        if (
            theirs is not None
            and mine is not None
            and theirs.status in REMEMBERED
            and mine.status == Status.JOINING
            and not self._admitted
        ):
            # An earlier life of ours left or was removed (its data dir lost or never told):
            # keep that, rather than announce a join nobody asked for.
            log.warning("the cluster knows this node as %s from before: kept", theirs.status)
            version = max(mine.version, theirs.version) + 1
            self.view = self.view.with_member(replace(mine, status=theirs.status, version=version))
        self.view = self.view.merge(view)
        self._remember_status()
        merged = self.state.merge(state)
        if merged is not self.state:
            self._switch(merged)
        for node_id, (stamp, mark) in synced.items():
            if node_id != self.node_id and stamp > self.synced_stamps.get(node_id, -1):
                self.synced[node_id], self.synced_stamps[node_id] = mark, stamp

    def _trusted(self, view: View, sender: str | None, admitted: bool) -> View:
        known = None if sender is None else self.view.get(sender)
        if sender is None or known is None or known.status != Status.REMOVED:
            return view
        if admitted:
            self.view = self.view.apply(sender, "rejoin")  # outranks the tombstone everywhere
            return view
        claim = view.get(sender)
        if claim is None or claim.status == Status.REMOVED:
            return view
        return View({node_id: m for node_id, m in view.members.items() if node_id != sender})

    def _load_ring(self) -> RingState:
        """The ring this node last knew, so a restarted cluster keeps its placement."""
        empty = RingState(Ring.build([], shards=self.config.shards, replicas=self.config.replicas))
        try:
            state = RingState.from_wire(json.loads(self._ring_file.read_text()))
        except FileNotFoundError:
            return empty
        except (ValueError, RingError) as error:
            log.warning("ignoring unreadable %s: %s", self._ring_file, error)
            return empty
        if state.current.shards != self.config.shards:
            raise RefusedToStart(
                f"{self._ring_file} has {state.current.shards} shards, not "
                f"{self.config.shards}: the shard count never changes"
            )
        return state

    def _save_ring(self) -> None:
        temporary = self._ring_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state.to_wire()))
        os.replace(temporary, self._ring_file)

    def _switch(self, state: RingState) -> None:
        old = self.state
        self.state = state
        self._save_ring()
        if old.current.epoch != state.current.epoch:
            log.info(
                "ring epoch %d -> %d (%d nodes)",
                old.current.epoch,
                state.current.epoch,
                len(state.current.nodes),
            )

    def refuse_peer(self, node_id: str, reason: str) -> None:
        """Record (and log, the first time) why a peer's gossip is refused."""
        if self.refused.get(node_id) != reason:
            log.warning("refusing peer %s: %s", node_id, reason)
        self.refused[node_id] = reason

    def apply(self, node_id: str, event: str) -> None:
        self.view = self.view.apply(node_id, event)
        self._remember_status()

    def _load_status(self) -> Status | None:
        try:
            raw = json.loads(self._status_file.read_text())
            status = Status(raw["status"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable %s: %s", self._status_file, error)
            return None
        return status if status in REMEMBERED else None

    def _remember_status(self) -> None:
        """Write this node's status down when it becomes leaving or removed (or clear it)."""
        me = self.view.get(self.node_id)
        status = None if me is None or me.status not in REMEMBERED else me.status
        if status == self._remembered or (me is not None and me.status == Status.DOWN):
            return
        if status is None:
            self._status_file.unlink(missing_ok=True)
        else:
            temporary = self._status_file.with_suffix(".tmp")
            temporary.write_text(json.dumps({"status": status.value}))
            os.replace(temporary, self._status_file)
        self._remembered = status

    def report(self, node_id: str, incarnations: Mapping[str, int]) -> None:
        """A recovered peer's highest incarnation of each node id among its slots."""
        if node_id != self.node_id:
            self.reports[node_id] = incarnations.get(self.node_id, 0)

    def rotate(self, incarnation: int) -> None:
        """Take a higher incarnation (already persisted): a new actor, and a member entry
        and hand-off stamp that outrank everything announced under the old one."""
        assert incarnation > self.incarnation
        self.incarnation = incarnation
        self.actor = f"{self.node_id}:{incarnation}"
        me = self.view.members[self.node_id]
        status = me.status if self.proven or me.status in REMEMBERED else Status.JOINING
        version = max(incarnation * VERSION_STRIDE, me.version + 1)
        self.view = self.view.with_member(Member(me.node_id, me.address, status, version))
        stamp = self.synced_stamps[self.node_id]
        self.synced_stamps[self.node_id] = max(incarnation * VERSION_STRIDE, stamp + 1)

    def reset_for_admission(self) -> None:
        """Drop this node's ring of one so the admitting cluster's ring replaces it."""
        empty = Ring.build([], shards=self.config.shards, replicas=self.config.replicas)
        self.state = RingState(empty)
        self.mark_synced("")
        self.recovered = False
        self.proven = False  # prove the incarnation again, against the admitting cluster
        self.heard_peer = True
        self._admitted = True  # an operator asked for it: no earlier leave or removal holds
        me = self.view.members[self.node_id]
        self.view = self.view.with_member(
            Member(me.node_id, me.address, Status.JOINING, me.version + 1)
        )
        self._remember_status()

    def step(self) -> None:
        """Run the claimant's rule if this node is the claimant, then mark departed leavers."""
        if not self.heard_peer:
            return  # a node that has not met its seeds must not invent a ring of its own
        alive = frozenset(n for n in self.view.members if self.alive(n))
        if claimant(self.view, alive) != self.node_id:
            return
        state = next_state(self.state, self.view, self.synced, self.node_id)
        if state is not self.state:
            self._switch(state)
        for node_id in departed(self.view, self.state):
            self.apply(node_id, "remove")

    def mark_synced(self, mark: str) -> None:
        self.synced[self.node_id] = mark
        self.synced_stamps[self.node_id] += 1

    def synced_to_wire(self) -> dict[str, list[Any]]:
        return {n: [self.synced_stamps[n], mark] for n, mark in self.synced.items()}

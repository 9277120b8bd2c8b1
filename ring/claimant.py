"""Ring changes: the gossiped ring state and the pure rule the claimant follows.

`RingState` is the current ring plus, during a hand-off, the pending ring that will replace
it, and `by`, the claimant that derived the newest of the two. Nodes gossip it and keep the
greater one (`merge`), ordered by (current epoch, pending epoch, claimant, checksums) where
the smaller claimant id ranks higher: two claimants that derived different rings at the same
epoch (each thought itself the smallest live id) are settled the same way on every node, in
favour of the one every view would have chosen.

Only the claimant (the live member with the smallest id) changes the ring, by `next_state`,
always from the state it holds, which it has merged with every state it heard:
- an empty ring (no data anywhere yet) is built straight from the members that want in;
- when the members that should hold shards differ from the ring's, a pending ring is derived
  from the current one, ONE node at a time (leavers first, then joiners): a join and a
  leave at once would otherwise replace two of three replicas of some shards in a single
  hand-off. A pending ring whose change is still wanted is kept until its hand-off ends;
  the next change waits (is queued) behind it. One no longer wanted is abandoned;
- the pending ring becomes current once every node that receives shards in it has pulled
  their state and a majority of the current ring's nodes have adopted it (each says so in
  `synced`: the handoff_mark of the pending ring it caught up with; a node that receives
  nothing announces the mark as soon as it holds the pending ring). The majority is what
  keeps two claimants cut off from each other from both switching at the same epoch: they
  cannot both hear a majority adopt their own ring. The mark names the epoch too, so a
  pending ring abandoned and derived again (same table, same checksum) needs a fresh pull.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ring.membership import Status, View
from ring.plan import plan
from ring.ring import Ring, RingError

HOLDING = frozenset({Status.UP, Status.JOINING, Status.DOWN})


@dataclass(frozen=True, slots=True)
class RingState:
    current: Ring
    pending: Ring | None = None
    by: str = ""  # the claimant that derived the newest ring here ("" if not known)

    def order_key(self) -> tuple[int, int, tuple[int, ...], str, str]:
        pending = self.pending
        return (
            self.current.epoch,
            -1 if pending is None else pending.epoch,
            _claimant_rank(self.by),
            self.current.checksum(),
            "" if pending is None else pending.checksum(),
        )

    def merge(self, other: RingState) -> RingState:
        return other if other.order_key() > self.order_key() else self

    def nodes(self) -> frozenset[str]:
        """Every node holding or about to hold shards."""
        held = set(self.current.nodes)
        if self.pending is not None:
            held.update(self.pending.nodes)
        return frozenset(held)

    def to_wire(self) -> dict[str, object]:
        return {
            "current": self.current.to_wire(),
            "pending": None if self.pending is None else self.pending.to_wire(),
            "by": self.by,
        }

    @classmethod
    def from_wire(cls, obj: object) -> RingState:
        if not isinstance(obj, dict) or not {"current", "pending"} <= set(obj) <= _WIRE_KEYS:
            raise RingError("ring state must be {current, pending, by}")
        current = Ring.from_wire(obj["current"])
        pending = None if obj["pending"] is None else Ring.from_wire(obj["pending"])
        if pending is not None and (
            pending.shards != current.shards
            or pending.replicas != current.replicas
            or pending.epoch <= current.epoch
        ):
            raise RingError("pending ring must share Q and N and be newer than the current ring")
        by = obj.get("by", "")
        if not isinstance(by, str):
            raise RingError("ring state's claimant must be a str")
        return cls(current, pending, by)


_WIRE_KEYS = frozenset({"current", "pending", "by"})


def _claimant_rank(node_id: str) -> tuple[int, ...]:
    """Greater for a smaller id (the claimant every view would pick), least for unknown."""
    if not node_id:
        return (-(1 << 32),)
    return (*(-ord(char) for char in node_id), 1)


def claimant(view: View, alive: frozenset[str]) -> str | None:
    """The live member that may change the ring: the smallest id, so all views agree."""
    candidates = [
        node_id
        for node_id, member in view.members.items()
        if member.status != Status.REMOVED and node_id in alive
    ]
    return min(candidates) if candidates else None


def desired_nodes(view: View, current: Ring) -> frozenset[str]:
    """Nodes that should hold shards: members that joined or stay, not those leaving; but
    when every node of the ring is leaving, those leavers, until a node joins to take their
    shards. The admin API refuses to let the last live member go, but it checks one node's
    view: two leaves sent at once to two nodes, each of the other, both pass it, and the
    ring would empty (every counter answering 503, the leavers marked removed)."""
    wanted = {node_id for node_id, member in view.members.items() if member.status in HOLDING}
    unknown = {node_id for node_id in current.nodes if view.get(node_id) is None}
    if wanted or unknown:
        return frozenset(wanted | unknown)
    return frozenset(
        node_id for node_id in current.nodes if view.members[node_id].status == Status.LEAVING
    )


def derive(current: Ring, desired: frozenset[str], epoch: int) -> Ring:
    """The next ring: ONE change toward `desired` (the first leaver, else the first joiner;
    the joiner first when the leaver is the ring's last node, whose shards would have no
    one to go to), or the current table again when there is none, at `epoch`. A joiner
    waits while the ring has no replica to give it (shards x N nodes already), rather than
    stop every other change."""
    ring = current
    leavers = sorted(set(current.nodes) - desired)
    joiners = sorted(desired - set(current.nodes))
    if not has_room(current):
        joiners = []
    if leavers and (len(current.nodes) > 1 or not joiners):
        ring = ring.without_node(leavers[0])
    elif joiners:
        ring = ring.with_node(joiners[0])
    return replace(ring, epoch=epoch)


def has_room(ring: Ring) -> bool:
    """Whether one more node would get a replica of some shard (Ring.with_node's rule)."""
    count = len(ring.nodes) + 1
    return count <= ring.replicas or count <= ring.shards * ring.replicas


def still_wanted(current: Ring, pending: Ring, desired: frozenset[str]) -> bool:
    """Whether the pending ring's change still moves toward `desired`: every node it adds
    is wanted and none it takes out is."""
    before, after = set(current.nodes), set(pending.nodes)
    if before == after:  # one that undid an abandoned change: wanted only if nothing else is
        return before == desired
    return after - before <= desired and not (before - after) & desired


def handoff_mark(pending: Ring) -> str:
    """What a node announces once it holds the state of its shards in `pending`."""
    return f"{pending.checksum()}@{pending.epoch}"


def handoff_done(state: RingState, synced: Mapping[str, str], view: View | None = None) -> bool:
    """Every receiving node caught up, and a majority of the current ring adopted it (of its
    nodes not removed: a force-removed node has no say, or removing a dead node from a ring
    of two could never end)."""
    pending = state.pending
    if pending is None:
        return True
    mark = handoff_mark(pending)
    targets = {move.target for move in plan(state.current, pending)}
    if not all(synced.get(target) == mark for target in targets):
        return False
    voters = [n for n in state.current.nodes if view is None or not _removed(view, n)]
    adopted = sum(1 for node_id in voters if synced.get(node_id) == mark)
    return adopted * 2 > len(voters)


def _removed(view: View, node_id: str) -> bool:
    member = view.get(node_id)
    return member is not None and member.status == Status.REMOVED


def queued(state: RingState, view: View) -> bool:
    """Whether a membership change waits behind the pending ring's hand-off."""
    current, pending = state.current, state.pending
    desired = desired_nodes(view, current)
    aimed_at = current if pending is None else pending
    return pending is not None and frozenset(aimed_at.nodes) != desired


def next_state(
    state: RingState, view: View, synced: Mapping[str, str], claimant_id: str = ""
) -> RingState:
    current, pending = state.current, state.pending
    desired = desired_nodes(view, current)
    if not current.nodes and pending is None:
        if not desired:
            return state
        built = Ring.build(desired, shards=current.shards, replicas=current.replicas)
        return RingState(replace(built, epoch=current.epoch + 1), by=claimant_id)
    if pending is not None and still_wanted(current, pending, desired):
        if handoff_done(state, synced, view):
            return RingState(pending, by=state.by)
        return state  # a further change is queued behind this hand-off
    if pending is None and frozenset(current.nodes) == desired:
        return state
    epoch = max(current.epoch, -1 if pending is None else pending.epoch) + 1
    return RingState(current, derive(current, desired, epoch), by=claimant_id)


def departed(view: View, state: RingState) -> list[str]:
    """Leaving members that no longer hold any shard: they may now be marked removed."""
    holding = state.nodes()
    return sorted(
        node_id
        for node_id, member in view.members.items()
        if member.status == Status.LEAVING and node_id not in holding
    )

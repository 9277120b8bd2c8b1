"""Ring changes: the gossiped ring state and the pure rule the claimant follows.

`RingState` is the current ring plus, during a hand-off, the pending ring that will replace
it. Nodes gossip it and keep the newer one (`merge`): the higher (current epoch, pending
epoch), then the higher checksums, so two views always converge on the same state.

Only the claimant (the live member with the smallest id) changes the ring, by `next_state`:
- an empty ring (no data anywhere yet) is built straight from the members that want in;
- when the members that should hold shards differ from the ring's, a pending ring is derived
  from the current one (leavers out, joiners in: only their replicas move);
- once every node that receives shards in the pending ring has pulled their state (it says
  so in `synced`: the handoff_mark of the pending ring it caught up with), the pending ring
  becomes current. The mark names the epoch too, so a pending ring abandoned and derived
  again (same table, same checksum) needs a fresh pull.
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

    def order_key(self) -> tuple[int, int, str, str]:
        pending = self.pending
        return (
            self.current.epoch,
            -1 if pending is None else pending.epoch,
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
        }

    @classmethod
    def from_wire(cls, obj: object) -> RingState:
        if not isinstance(obj, dict) or set(obj) != {"current", "pending"}:
            raise RingError("ring state must be {current, pending}")
        current = Ring.from_wire(obj["current"])
        pending = None if obj["pending"] is None else Ring.from_wire(obj["pending"])
        if pending is not None and (
            pending.shards != current.shards or pending.epoch <= current.epoch
        ):
            raise RingError("pending ring must share Q and be newer than the current ring")
        return cls(current, pending)


def claimant(view: View, alive: frozenset[str]) -> str | None:
    """The live member that may change the ring: the smallest id, so all views agree."""
    candidates = [
        node_id
        for node_id, member in view.members.items()
        if member.status != Status.REMOVED and node_id in alive
    ]
    return min(candidates) if candidates else None


def desired_nodes(view: View, current: Ring) -> frozenset[str]:
    """Nodes that should hold shards: members that joined or stay, not those leaving."""
    wanted = {node_id for node_id, member in view.members.items() if member.status in HOLDING}
    unknown = {node_id for node_id in current.nodes if view.get(node_id) is None}
    return frozenset(wanted | unknown)


def derive(current: Ring, desired: frozenset[str], epoch: int) -> Ring:
    ring = current
    for node_id in sorted(set(current.nodes) - desired):
        ring = ring.without_node(node_id)
    for node_id in sorted(desired - set(current.nodes)):
        ring = ring.with_node(node_id)
    return replace(ring, epoch=epoch)


def handoff_mark(pending: Ring) -> str:
    """What a node announces once it holds the state of its shards in `pending`."""
    return f"{pending.checksum()}@{pending.epoch}"


def handoff_done(state: RingState, synced: Mapping[str, str]) -> bool:
    pending = state.pending
    if pending is None:
        return True
    mark = handoff_mark(pending)
    targets = {move.target for move in plan(state.current, pending)}
    return all(synced.get(target) == mark for target in targets)


def next_state(state: RingState, view: View, synced: Mapping[str, str]) -> RingState:
    current, pending = state.current, state.pending
    desired = desired_nodes(view, current)
    if not current.nodes and pending is None:
        if not desired:
            return state
        built = Ring.build(desired, shards=current.shards, replicas=current.replicas)
        return RingState(replace(built, epoch=current.epoch + 1))
    aimed_at = pending.nodes if pending is not None else current.nodes
    if frozenset(aimed_at) != desired:
        epoch = max(current.epoch, -1 if pending is None else pending.epoch) + 1
        return RingState(current, derive(current, desired, epoch))
    if pending is not None and handoff_done(state, synced):
        return RingState(pending)
    return state


def departed(view: View, state: RingState) -> list[str]:
    """Leaving members that no longer hold any shard: they may now be marked removed."""
    holding = state.nodes()
    return sorted(
        node_id
        for node_id, member in view.members.items()
        if member.status == Status.LEAVING and node_id not in holding
    )

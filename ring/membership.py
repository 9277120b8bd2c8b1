"""Membership: who is in the cluster, where to reach them and in what state, spread by gossip.

A View maps each node id to a Member (address, status, version). An entry changes only by an
event in TRANSITIONS, which also bumps its version:

    event     from                          to        why
    ready     JOINING                       UP        hand-off done, it serves its shards
    leave     JOINING, UP                   LEAVING   admin: hand the shards off, then go
    fail      JOINING, UP, LEAVING          DOWN      the failure detector suspects it
    recover   DOWN                          UP        heard from again, state intact
    rejoin    DOWN, REMOVED                 JOINING   back after losing its state or being
                                                      removed: it must be handed shards again
    remove    JOINING, UP, LEAVING, DOWN    REMOVED   out of the cluster (admin or timeout)

Any other (status, event) pair raises TransitionError and changes nothing. DOWN does not
remember what the node was doing: a node that failed while leaving comes back UP and its leave
is issued again. REMOVED is a tombstone, kept so that older gossip cannot resurrect the node.

merge(a, b) keeps, per node, the entry with the higher version. Equal versions with different
content (two nodes applied different events to the same entry) are ordered by the worse status
(UP < JOINING < LEAVING < DOWN < REMOVED), then by address, so entries are totally ordered and
merge (a per-node maximum) is associative, commutative and idempotent: gossip converges
whatever the order, grouping or repetition of the views it exchanges.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "EVENTS",
    "LIVE",
    "TRANSITIONS",
    "Member",
    "MembershipError",
    "Status",
    "TransitionError",
    "View",
]


class MembershipError(ValueError):
    """A member, a view or a view on the wire is not valid."""


class TransitionError(MembershipError):
    """An event that TRANSITIONS does not allow, or one for an unknown node."""


class Status(StrEnum):
    JOINING = "joining"
    UP = "up"
    LEAVING = "leaving"
    DOWN = "down"
    REMOVED = "removed"


LIVE = frozenset({Status.JOINING, Status.UP, Status.LEAVING})

TRANSITIONS: dict[tuple[Status, str], Status] = {
    (Status.JOINING, "ready"): Status.UP,
    (Status.JOINING, "leave"): Status.LEAVING,
    (Status.UP, "leave"): Status.LEAVING,
    (Status.JOINING, "fail"): Status.DOWN,
    (Status.UP, "fail"): Status.DOWN,
    (Status.LEAVING, "fail"): Status.DOWN,
    (Status.DOWN, "recover"): Status.UP,
    (Status.DOWN, "rejoin"): Status.JOINING,
    (Status.REMOVED, "rejoin"): Status.JOINING,
    (Status.JOINING, "remove"): Status.REMOVED,
    (Status.UP, "remove"): Status.REMOVED,
    (Status.LEAVING, "remove"): Status.REMOVED,
    (Status.DOWN, "remove"): Status.REMOVED,
}

EVENTS = frozenset(event for _, event in TRANSITIONS)

# On equal versions the worse status wins: a suspicion or a removal is never hidden by a tie.
_SEVERITY = {
    Status.UP: 0,
    Status.JOINING: 1,
    Status.LEAVING: 2,
    Status.DOWN: 3,
    Status.REMOVED: 4,
}


def _check_address(address: object) -> str:
    if not isinstance(address, str):
        raise MembershipError(f"an address must be a str, not {type(address).__name__}")
    host, _, port = address.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise MembershipError(f"an address must be host:port, got {address!r}")
    return address


@dataclass(frozen=True, slots=True)
class Member:
    """One node's entry; `version` is its incarnation of this entry, and the higher wins."""

    node_id: str
    address: str
    status: Status
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise MembershipError(f"a node id must be a non-empty str, got {self.node_id!r}")
        _check_address(self.address)
        if not isinstance(self.status, Status):
            raise MembershipError(f"status must be a Status, got {self.status!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise MembershipError(f"version must be an int, got {self.version!r}")
        if self.version < 0:
            raise MembershipError(f"version must be >= 0, got {self.version}")

    def precedence(self) -> tuple[int, int, str]:
        """The total order merge uses: version, then worse status, then address."""
        return (self.version, _SEVERITY[self.status], self.address)

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.node_id,
            "address": self.address,
            "status": str(self.status),
            "version": self.version,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Member:
        # Unknown keys are ignored so that a newer node can add fields without breaking us.
        if not isinstance(obj, dict) or not {"id", "address", "status", "version"} <= obj.keys():
            raise MembershipError("a wire member must map id, address, status and version")
        try:
            status = Status(obj["status"]) if isinstance(obj["status"], str) else None
        except ValueError:
            status = None
        if status is None:
            raise MembershipError(f"unknown status {obj['status']!r}")
        return cls(obj["id"], obj["address"], status, obj["version"])


@dataclass(frozen=True)
class View:
    """Every known member by node id. Immutable: each change returns a new View."""

    members: Mapping[str, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.members, Mapping):
            raise MembershipError("members must be a mapping of node id to Member")
        for node_id, member in self.members.items():
            if not isinstance(member, Member) or member.node_id != node_id:
                raise MembershipError(f"entry {node_id!r} is not that node's Member")
        # A private sorted copy: the caller's dict cannot change us, and iteration is ordered.
        frozen = {node_id: self.members[node_id] for node_id in sorted(self.members)}
        object.__setattr__(self, "members", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash(frozenset(self.members.values()))

    @classmethod
    def empty(cls) -> View:
        return cls({})

    def get(self, node_id: str) -> Member | None:
        return self.members.get(node_id)

    def with_member(self, member: Member) -> View:
        """This view with `member` added or replaced, whatever its version."""
        return View({**self.members, member.node_id: member})

    def apply(self, node_id: str, event: str) -> View:
        """This view after `event` happened to `node_id`; its version goes up by one."""
        member = self.members.get(node_id)
        if member is None:
            raise TransitionError(f"unknown node {node_id!r}")
        status = TRANSITIONS.get((member.status, event))
        if status is None:
            raise TransitionError(f"{node_id!r} is {member.status}: cannot {event!r}")
        return self.with_member(replace(member, status=status, version=member.version + 1))

    def merge(self, other: View) -> View:
        """Per node, the entry of greater precedence; associative, commutative, idempotent."""
        merged = dict(self.members)
        for node_id, theirs in other.members.items():
            ours = merged.get(node_id)
            if ours is None or theirs.precedence() > ours.precedence():
                merged[node_id] = theirs
        return View(merged)

    def live(self) -> tuple[Member, ...]:
        """The members that hold or are taking shards (JOINING, UP, LEAVING), by node id."""
        return tuple(member for member in self.members.values() if member.status in LIVE)

    def digest(self) -> str:
        """Hex BLAKE2b-128 of the canonical form; equal views, equal digests."""
        canonical = json.dumps(self.to_wire(), separators=(",", ":"))
        return hashlib.blake2b(canonical.encode("ascii"), digest_size=16).hexdigest()

    def to_wire(self) -> dict[str, object]:
        """Plain types for msgpack or JSON; `from_wire` reverses it."""
        return {"members": [member.to_wire() for member in self.members.values()]}

    @classmethod
    def from_wire(cls, obj: object) -> View:
        """The view `to_wire` produced; MembershipError (a ValueError) on any bad input."""
        if not isinstance(obj, dict) or not isinstance(obj.get("members"), list | tuple):
            raise MembershipError("a wire view must map 'members' to a list")
        members: dict[str, Member] = {}
        for item in obj["members"]:
            member = Member.from_wire(item)
            if member.node_id in members:
                raise MembershipError(f"node {member.node_id!r} appears twice")
            members[member.node_id] = member
        return cls(members)

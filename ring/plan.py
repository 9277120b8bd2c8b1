"""Move plans: which replicas a ring change creates, and where each one's state comes from.

A shard changes owner by hand-off: the new owner first receives the state, then the ring
switches. `plan(old, new)` lists those hand-offs. Only membership of a list matters; a node
that merely changes position (a coordinator swap) already holds the state and moves nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from ring.ring import Ring, RingError

__all__ = ["Move", "plan"]


class Move(NamedTuple):
    """`target` must receive `shard`'s state from `source` (None: nobody had it)."""

    shard: int
    source: str | None
    target: str


def plan(old: Ring, new: Ring) -> tuple[Move, ...]:
    """The hand-offs that take `old` to `new`, sorted by (shard, target).

    Each node that enters a list is paired, in list order, with a node that left it, the one
    whose replica it takes over. When none left (the list grew) the source is the old list's
    coordinator. A source may be unreachable (a failed node being removed); the hand-off then
    falls back to the shard's other replicas, which anti-entropy keeps converged.
    """
    if old.shards != new.shards:
        raise RingError(f"cannot plan from {old.shards} to {new.shards} shards")
    moves: list[Move] = []
    for shard, (before, after) in enumerate(zip(old.table, new.table, strict=True)):
        gained = [node for node in after if node not in before]
        lost = [node for node in before if node not in after]
        fallback = before[0] if before else None
        for index, target in enumerate(gained):
            source = lost[index] if index < len(lost) else fallback
            moves.append(Move(shard, source, target))
    return tuple(sorted(moves, key=lambda move: (move.shard, move.target)))

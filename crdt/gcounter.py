"""Grow-only counter (G-Counter), a state-based CRDT.

State: a map `actor -> count` with every count in 1..UINT64_MAX. An actor (one incarnation of
one node) only ever raises its own slot. Absent actors count 0 and zero slots are never stored,
so equal states compare (and hash) equal.

value(): the sum of all slots.

merge(a, b): the per-actor maximum. It is the least upper bound of a semilattice, hence
    associative   a.merge(b.merge(c)) == a.merge(b).merge(c)
    commutative   a.merge(b) == b.merge(a)
    idempotent    a.merge(a) == a
so replicas converge whatever the order, grouping or repetition of the states they exchange.

delta_since(older): the slots where this state is greater than `older`. For every state `r`
that already includes `older` (r.merge(older) == r), r.merge(s.delta_since(older)) == r.merge(s).

Values are immutable: the slot mapping is never mutated after construction; every change
builds a new mapping. The constructor trusts its argument (this is the hot path); untrusted
input comes in through `crdt.codec`, which validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crdt.errors import SlotFullError

__all__ = ["UINT64_MAX", "GCounter"]

UINT64_MAX = 2**64 - 1


def _exact_int(value: object, what: str) -> int:
    """Return `value` as a plain int; bools and non-integers are refused with TypeError."""
    # bool is an int subclass, but True as an increment is almost always a caller's bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return int(value)


@dataclass(frozen=True, slots=True)
class GCounter:
    """A grow-only counter: `slots` maps actor id to its count (>= 1)."""

    slots: Mapping[str, int]

    @classmethod
    def empty(cls) -> GCounter:
        return _EMPTY

    def __hash__(self) -> int:
        # The generated hash would hash the dict and fail; equal states must hash equal.
        return hash(frozenset(self.slots.items()))

    def __len__(self) -> int:
        return len(self.slots)

    def value(self) -> int:
        return sum(self.slots.values())

    def get(self, actor: str) -> int:
        return self.slots.get(actor, 0)

    def actors(self) -> frozenset[str]:
        return frozenset(self.slots)

    def increment(self, actor: str, amount: int) -> GCounter:
        """Return this counter with `amount` (>= 0) added to `actor`'s slot; SlotFullError
        if that slot would pass UINT64_MAX (nothing changes)."""
        if type(amount) is not int:
            amount = _exact_int(amount, "amount")
        if amount <= 0:
            if amount == 0:
                return self
            raise ValueError(f"a G-Counter cannot decrease (amount {amount})")
        count = self.slots.get(actor, 0) + amount
        if count > UINT64_MAX:
            raise SlotFullError(f"slot {actor!r} would exceed uint64 ({count})")
        slots = dict(self.slots)
        slots[actor] = count
        return _gcounter(slots)

    def merge(self, other: GCounter) -> GCounter:
        """Per-actor maximum. Returns `self` or `other` unchanged when it already dominates."""
        # Replicas usually agree (reads, anti-entropy); a C-level compare settles that at once.
        if self.slots == other.slots:
            return self
        big, small = (self, other) if len(self.slots) >= len(other.slots) else (other, self)
        big_slots = big.slots
        merged: dict[str, int] | None = None
        for actor, count in small.slots.items():
            if count > big_slots.get(actor, 0):
                if merged is None:
                    merged = dict(big_slots)
                merged[actor] = count
        if merged is None:
            return big
        # Equal sizes: `small` may hold every actor and dominate; reuse it so callers can
        # detect "nothing new" by identity.
        if len(merged) == len(small.slots) and merged == small.slots:
            return small
        return _gcounter(merged)

    def delta_since(self, older: GCounter) -> GCounter:
        """The slots where this state is greater than `older` (a state, mergeable as one)."""
        old = older.slots
        changed = {actor: count for actor, count in self.slots.items() if count > old.get(actor, 0)}
        if len(changed) == len(self.slots):
            return self
        return _gcounter(changed) if changed else _EMPTY


_new = object.__new__
_set_slots = vars(GCounter)["slots"].__set__


def _gcounter(slots: Mapping[str, int]) -> GCounter:
    """GCounter(slots) for this package's hot paths, without the dataclass __init__.

    A frozen dataclass __init__ assigns through object.__setattr__; setting the slot directly
    is about a third cheaper. Must set every field: update it when GCounter gains one.
    """
    counter: GCounter = _new(GCounter)
    _set_slots(counter, slots)
    return counter


_EMPTY = GCounter({})

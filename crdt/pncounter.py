"""Positive-negative counter (PN-Counter), a state-based CRDT.

State: two G-Counters keyed by actor, `p` (the sum of each actor's increments) and `n` (the
sum of each actor's decrements, as a positive number). Every slot is in 1..UINT64_MAX.

value(): p.value() - n.value(), exact (a Python int, unbounded).

int64 (the rule the API documents). The state keeps every slot exact; only what leaves it is
bounded. `increment` refuses (CounterOverflowError) a delta that would move the value out of
int64 or further out: the new value is above INT64_MAX with delta > 0, or below INT64_MIN
with delta < 0. On a state in range that is just "the new value is an int64". It cannot be
more: replicas that each accepted an increment without seeing the other (each checked the
value it saw) merge to a value outside int64, and merge, a per-slot maximum, cannot refuse.
Such a state is valid everywhere, because its slots are still uint64: the codec, peers and
stores take it like any other, so it can never poison a link or a store. What leaves the
state is `saturate(value)`: the value clamped to [INT64_MIN, INT64_MAX] and a flag saying it
was clamped. Clients read that (marked `saturated`), and receipts and the history record the
clamped number, so every number a node emits fits int64. A counter outside the range still
takes deltas that move it back toward the range (else only a reset could free it).

Slots. An actor's slot can fill (pass UINT64_MAX) while the value stays in range: alternating
+2**62 and -2**62 fills P after four increments. `increment` then raises SlotFullError (a
CounterOverflowError), and the same delta under a fresh actor succeeds: a fresh slot is empty
and one delta is at most 2**63 <= UINT64_MAX. The node moves to a new incarnation for that
(node/coordination/rotation.py); the sums grow past uint64 harmlessly, since only slots are
bounded.

merge(a, b): (a.p.merge(b.p), a.n.merge(b.n)), the per-actor maximum of each half. As the
product of two semilattices it is
    associative   a.merge(b.merge(c)) == a.merge(b).merge(c)
    commutative   a.merge(b) == b.merge(a)
    idempotent    a.merge(a) == a
so replaying or reordering states and deltas never changes the converged value.

delta_since(older): the slots (of p and of n) where this state is greater than `older`; for
every state `r` that includes `older` (r.merge(older) == r),
r.merge(s.delta_since(older)) == r.merge(s). A delta is itself a PNCounter, shipped like one.

reset(): clears what this state has observed, as mergeable state rather than a wipe. For each
actor `a` it raises the slots of the floor actor `a` + FLOOR_SUFFIX to p = a's N slot and
n = a's P slot, so that actor's net contribution becomes zero. The floor grows only through
the same per-slot maximum, so a reset merges like any update: increments it did not observe
(concurrent ones, on any replica) stay counted, a repeated reset is harmless, and the name
stays usable. Real actor ids never contain FLOOR_SUFFIX's "#".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from crdt.errors import CounterOverflowError
from crdt.gcounter import UINT64_MAX, GCounter, _exact_int, _gcounter

__all__ = ["INT64_MAX", "INT64_MIN", "PNCounter", "saturate"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def saturate(value: int) -> tuple[int, bool]:
    """(value clamped to [INT64_MIN, INT64_MAX], whether it was clamped): what a value
    outside int64 (reached only by merging concurrent increments) is reported as."""
    if value > INT64_MAX:
        return INT64_MAX, True
    if value < INT64_MIN:
        return INT64_MIN, True
    return value, False


@dataclass(frozen=True, slots=True)
class PNCounter:
    """A counter that goes up (`p`) and down (`n`); value = p.value() - n.value()."""

    p: GCounter
    n: GCounter

    @classmethod
    def empty(cls) -> PNCounter:
        return _EMPTY

    def value(self) -> int:
        """The exact value; it may lie outside int64 after a merge (see saturate)."""
        return self.p.value() - self.n.value()

    def saturated_value(self) -> tuple[int, bool]:
        """saturate(self.value()): the int64 reported for this state, and whether clamped."""
        return saturate(self.value())

    def slot(self, actor: str) -> tuple[int, int]:
        """`actor`'s (increments, decrements)."""
        return self.p.get(actor), self.n.get(actor)

    def is_empty(self) -> bool:
        return not self.p.slots and not self.n.slots

    def actors(self) -> frozenset[str]:
        return frozenset(self.p.slots.keys() | self.n.slots.keys())

    def increment(self, actor: str, delta: int) -> PNCounter:
        """Return this counter with `delta` (any sign) added under `actor`.

        CounterOverflowError if the value would move out of int64 or further out of it;
        SlotFullError (a subclass) if only `actor`'s slot would pass UINT64_MAX, when the
        same delta under a fresh actor would be accepted. Nothing changes either way."""
        if type(delta) is not int:
            delta = _exact_int(delta, "delta")
        if delta == 0:
            return self
        value = sum(self.p.slots.values()) - sum(self.n.slots.values()) + delta
        if (value > INT64_MAX and delta > 0) or (value < INT64_MIN and delta < 0):
            raise CounterOverflowError(f"value would leave int64 ({value})")
        if delta > 0:
            return _pncounter(self.p.increment(actor, delta), self.n)
        return _pncounter(self.p, self.n.increment(actor, -delta))

    def reset(self) -> PNCounter:
        """This state with everything it has observed cleared (see the module docstring)."""
        p, n = dict(self.p.slots), dict(self.n.slots)
        for actor in self.actors():
            if actor.endswith(FLOOR_SUFFIX):
                continue
            floor = actor + FLOOR_SUFFIX
            observed_p, observed_n = self.p.get(actor), self.n.get(actor)
            if observed_n > p.get(floor, 0):
                p[floor] = observed_n
            if observed_p > n.get(floor, 0):
                n[floor] = observed_p
        return self.merge(_pncounter(_gcounter(p), _gcounter(n)))

    @classmethod
    def from_slot(cls, actor: str, p: int, n: int) -> PNCounter:
        """The state holding only `actor`'s slot (p, n): what a coordinator replicates."""
        for count in (p, n):
            if type(count) is not int or not 0 <= count <= UINT64_MAX:
                raise CounterOverflowError(f"slot count {count!r} is not a uint64")
        return _pncounter(
            _gcounter({actor: p}) if p else _EMPTY_G, _gcounter({actor: n}) if n else _EMPTY_G
        )

    def merge(self, other: PNCounter) -> PNCounter:
        """Per-actor maximum of both halves; returns an argument unchanged when it dominates."""
        p = self.p.merge(other.p)
        n = self.n.merge(other.n)
        if p is self.p and n is self.n:
            return self
        if p is other.p and n is other.n:
            return other
        return _pncounter(p, n)

    def restricted_to(self, actors: Collection[str]) -> PNCounter:
        """This state's slots of these actors only: what a store that merges slot by slot
        needs of a state whose other slots it already holds."""
        p_slots, n_slots = self.p.slots, self.n.slots
        p = {a: p_slots[a] for a in actors if a in p_slots}
        n = {a: n_slots[a] for a in actors if a in n_slots}
        return _pncounter(_gcounter(p) if p else _EMPTY_G, _gcounter(n) if n else _EMPTY_G)

    def delta_since(self, older: PNCounter) -> PNCounter:
        """The slots where this state is greater than `older`, as a mergeable PNCounter."""
        p = self.p.delta_since(older.p)
        n = self.n.delta_since(older.n)
        if p is self.p and n is self.n:
            return self
        if not p.slots and not n.slots:
            return _EMPTY
        return _pncounter(p, n)


_new = object.__new__
_set_p = vars(PNCounter)["p"].__set__
_set_n = vars(PNCounter)["n"].__set__


def _pncounter(p: GCounter, n: GCounter) -> PNCounter:
    """PNCounter(p, n) without the dataclass __init__ (see gcounter._gcounter for why)."""
    counter: PNCounter = _new(PNCounter)
    _set_p(counter, p)
    _set_n(counter, n)
    return counter


_EMPTY = PNCounter(GCounter.empty(), GCounter.empty())
FLOOR_SUFFIX = "#floor"  # floor actor of actor a: a + FLOOR_SUFFIX


def with_covered(actors: Collection[str]) -> list[str]:
    """`actors` and the actor each floor among them covers: a floor goes nowhere (a replica,
    a disk) without the slot under it, or the counter would read below what it observed."""
    covered = [a.removesuffix(FLOOR_SUFFIX) for a in actors if a.endswith(FLOOR_SUFFIX)]
    if not covered:  # the common case, on a flush's path: no floor
        return actors if isinstance(actors, list) else list(actors)
    return [*actors, *(a for a in covered if a not in actors)]


_EMPTY_G = GCounter.empty()

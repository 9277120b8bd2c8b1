"""Packed PN-Counter: the state of a PNCounter in one bytes object, for stores that hold millions.

State: a bytes string of 20-byte slots, each little-endian (actor index u32, p u64, n u64),
sorted by actor index, with no slot whose p and n are both 0. An actor index stands for an
actor id through an `ActorTable`, which interns ids append-only: an index means the same
actor for as long as its table lives, so packed states are compared and merged only with
states packed through the same table. `pack` and `unpack` convert to and from PNCounter.
Under one table, equal states are equal bytes (sorted, no zero slots).

value(): sum of p - sum of n, exact, as PNCounter.value().

version(): sum of p + sum of n, every slot's lifetime total. Merge takes per-slot maxima and
increment grows one slot, so a state's version never falls, and a state that dominates
another and differs from it has a larger one: an order of a counter's states consistent with
causality, where its value, which a decrement lowers, is not.

increment(): PNCounter.increment on one slot, with the same refusals: CounterOverflowError when
the value would move out of int64 or further out, SlotFullError when only the slot would pass
UINT64_MAX; nothing changes either way.

merge(a, b): the per-actor maximum of p and of n, exactly PNCounter.merge, so it is
    associative   merge(a, merge(b, c)) == merge(merge(a, b), c)
    commutative   merge(a, b) == merge(b, a)
    idempotent    merge(a, a) == a
and returns an argument unchanged (by identity) when it already dominates.

delta_since(older): the slots greater than in `older`, each carrying only the half (p or n)
that grew, exactly PNCounter.delta_since; a delta is itself a packed state.

tests/crdt/test_packed.py checks every function against the PNCounter it packs.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Collection

from crdt.errors import CounterOverflowError, SlotFullError
from crdt.gcounter import UINT64_MAX, GCounter, _exact_int, _gcounter
from crdt.pncounter import INT64_MAX, INT64_MIN, PNCounter, _pncounter

__all__ = [
    "EMPTY",
    "SLOT_SIZE",
    "ActorTable",
    "delta_since",
    "increment",
    "merge",
    "merge_slot",
    "pack",
    "slot",
    "slots",
    "unpack",
    "value",
    "version",
]

SLOT = struct.Struct("<IQQ")
SLOT_SIZE = SLOT.size  # 20
MAX_ACTORS = 2**32  # an index is a u32
EMPTY = b""
_EMPTY_G = GCounter.empty()

# Struct of `count` slots, by count: one C call unpacks a whole state.
_structs: list[struct.Struct] = []


def _fields(packed: bytes) -> tuple[int, ...]:
    """(index, p, n, index, p, n, ...) of every slot."""
    count = len(packed) // SLOT_SIZE
    if count >= len(_structs):
        while len(_structs) <= count:
            _structs.append(struct.Struct("<" + "IQQ" * len(_structs)))
    return _structs[count].unpack(packed)


class ActorTable:
    """Actor ids interned to indexes 0, 1, 2, ... in order of first use, never removed."""

    __slots__ = ("actors", "ids")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # actor id -> its index
        self.actors: list[str] = []  # index -> actor id

    def __len__(self) -> int:
        return len(self.actors)

    def index(self, actor: str) -> int:
        """The index of actor, given it now if it has none."""
        found = self.ids.get(actor)
        if found is not None:
            return found
        if type(actor) is not str:
            raise TypeError(f"an actor id must be a str, not {type(actor).__name__}")
        if len(self.actors) >= MAX_ACTORS:
            raise OverflowError(f"an actor table holds at most {MAX_ACTORS} actors")
        index = self.ids[actor] = len(self.actors)
        self.actors.append(actor)
        return index


def pack(state: PNCounter, table: ActorTable) -> bytes:
    """`state` packed, its actors interned in `table`."""
    p, n = state.p.slots, state.n.slots
    index = table.index
    if not n:  # the common case: increments only
        rows = sorted((index(actor), count, 0) for actor, count in p.items())
    else:
        rows = sorted(
            (index(actor), p.get(actor, 0), n.get(actor, 0)) for actor in p.keys() | n.keys()
        )
    return _pack_rows(rows)


def _pack_rows(rows: list[tuple[int, int, int]]) -> bytes:
    pack_slot = SLOT.pack
    return b"".join([pack_slot(*row) for row in rows])


def unpack(packed: bytes, table: ActorTable) -> PNCounter:
    """The PNCounter that `packed` (packed through `table`) stands for."""
    actors = table.actors
    p: dict[str, int] = {}
    n: dict[str, int] = {}
    for index, count_p, count_n in SLOT.iter_unpack(packed):
        if count_p:
            p[actors[index]] = count_p
        if count_n:
            n[actors[index]] = count_n
    return _pncounter(_gcounter(p) if p else _EMPTY_G, _gcounter(n) if n else _EMPTY_G)


def unpack_only(packed: bytes, table: ActorTable, actors: Collection[str]) -> PNCounter:
    """unpack(packed, table).restricted_to(actors), building only those actors' slots: a
    flush writes a node's own slot of each counter, not its whole state."""
    names = table.actors
    wanted = actors if isinstance(actors, (set, frozenset)) else set(actors)
    p: dict[str, int] = {}
    n: dict[str, int] = {}
    for index, count_p, count_n in SLOT.iter_unpack(packed):
        actor = names[index]
        if actor in wanted:
            if count_p:
                p[actor] = count_p
            if count_n:
                n[actor] = count_n
    return _pncounter(_gcounter(p) if p else _EMPTY_G, _gcounter(n) if n else _EMPTY_G)


def slots(packed: bytes) -> list[tuple[int, int, int]]:
    """(actor index, p, n) of every slot, in index order."""
    return list(SLOT.iter_unpack(packed))


def value(packed: bytes, start: int = 0) -> int:
    """The value of the state packed from offset `start` on (a store may put a header first)."""
    count = (len(packed) - start) // SLOT_SIZE
    if count >= len(_structs):
        _fields(packed[start:])  # makes the Struct of that count
    fields: tuple[int, ...] = _structs[count].unpack_from(packed, start)
    return sum(fields[1::3]) - sum(fields[2::3])


def version(packed: bytes, start: int = 0) -> int:
    """Sum of every slot's p and n, of the state packed from offset `start` on."""
    count = (len(packed) - start) // SLOT_SIZE
    if count >= len(_structs):
        _fields(packed[start:])
    fields: tuple[int, ...] = _structs[count].unpack_from(packed, start)
    return sum(fields) - sum(fields[0::3])


def value_and_version(packed: bytes, start: int = 0) -> tuple[int, int]:
    """(value, version) of the state packed from offset `start` on, from one unpack: what
    the history records of each changed counter."""
    count = (len(packed) - start) // SLOT_SIZE
    if count >= len(_structs):
        _fields(packed[start:])
    fields: tuple[int, ...] = _structs[count].unpack_from(packed, start)
    p, n = sum(fields[1::3]), sum(fields[2::3])
    return p - n, p + n


def slot(packed: bytes, index: int) -> tuple[int, int]:
    """The (p, n) of actor `index` ((0, 0) when it has no slot)."""
    fields = _fields(packed)
    indexes = fields[0::3]
    at = bisect_left(indexes, index)
    if at < len(indexes) and indexes[at] == index:
        return fields[3 * at + 1], fields[3 * at + 2]
    return 0, 0


def increment(packed: bytes, index: int, delta: int) -> tuple[bytes, int, int]:
    """`delta` (any sign) added under actor `index`: (the new state, the actor's new p, n).

    The refusals of PNCounter.increment, with nothing changed."""
    if type(delta) is not int:
        delta = _exact_int(delta, "delta")
    fields = _fields(packed)
    indexes = fields[0::3]
    at = bisect_left(indexes, index)
    start = at * SLOT_SIZE
    if at < len(indexes) and indexes[at] == index:
        p, n, end = fields[3 * at + 1], fields[3 * at + 2], start + SLOT_SIZE
    else:
        p = n = 0
        end = start
    if delta == 0:
        return packed, p, n
    total = sum(fields[1::3]) - sum(fields[2::3]) + delta
    if delta > 0:
        if total > INT64_MAX:
            raise CounterOverflowError(f"value would leave int64 ({total})")
        p += delta
        if p > UINT64_MAX:
            raise SlotFullError(f"slot of actor {index} would exceed uint64 ({p})")
    else:
        if total < INT64_MIN:
            raise CounterOverflowError(f"value would leave int64 ({total})")
        n -= delta
        if n > UINT64_MAX:
            raise SlotFullError(f"slot of actor {index} would exceed uint64 ({n})")
    return packed[:start] + SLOT.pack(index, p, n) + packed[end:], p, n


def merge_slot(packed: bytes, index: int, p: int, n: int) -> tuple[bytes, int, int]:
    """merge(packed, the state of one slot (index, p, n)), and how much p and n grew:
    `packed` itself and (0, 0) when it already dominates. p and n must be uint64s."""
    fields = _fields(packed)
    indexes = fields[0::3]
    at = bisect_left(indexes, index)
    start = at * SLOT_SIZE
    if at < len(indexes) and indexes[at] == index:
        old_p, old_n = fields[3 * at + 1], fields[3 * at + 2]
        if p <= old_p and n <= old_n:
            return packed, 0, 0
        grown_p, grown_n = (p - old_p if p > old_p else 0), (n - old_n if n > old_n else 0)
        new = SLOT.pack(index, old_p + grown_p, old_n + grown_n)
        return packed[:start] + new + packed[start + SLOT_SIZE :], grown_p, grown_n
    if not p and not n:
        return packed, 0, 0
    return packed[:start] + SLOT.pack(index, p, n) + packed[start:], p, n


def merge(a: bytes, b: bytes) -> bytes:
    """Per-actor maximum of p and of n; `a` or `b` itself when it already dominates."""
    if a == b or not b:
        return a
    if not a:
        return b
    merged = {index: (p, n) for index, p, n in SLOT.iter_unpack(a)}
    changed = False
    for index, p, n in SLOT.iter_unpack(b):
        old = merged.get(index)
        if old is None:
            merged[index] = (p, n)
            changed = True
        elif p > old[0] or n > old[1]:
            merged[index] = (max(p, old[0]), max(n, old[1]))
            changed = True
    if not changed:
        return a
    result = _pack_rows([(index, *pair) for index, pair in sorted(merged.items())])
    return b if result == b else result


def delta_since(packed: bytes, older: bytes) -> bytes:
    """The slots greater than in `older`, each with only its grown half (a packed state)."""
    if packed == older:
        return EMPTY
    old = {index: (p, n) for index, p, n in SLOT.iter_unpack(older)}
    rows = []
    for index, p, n in SLOT.iter_unpack(packed):
        old_p, old_n = old.get(index, (0, 0))
        grown_p, grown_n = (p if p > old_p else 0), (n if n > old_n else 0)
        if grown_p or grown_n:
            rows.append((index, grown_p, grown_n))
    return _pack_rows(rows)

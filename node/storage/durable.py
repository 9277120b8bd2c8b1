"""The durable replica: where counter slots outlive a node, or the whole cluster.

Two implementations share this interface: Redis, standalone or Cluster (durable_redis.py),
and SQLite in the node's data dir (durable_sqlite.py), the embedded default that needs
nothing installed; backends.open_durable picks one. Every write is a per-slot maximum, so
writes are idempotent and commutative: any node may write any state of any counter at any
time, in any order.

A flush (`write_changes`) writes a counter's state and the receipts that answer for it in
one atomic write (one SQLite transaction; one Redis script call, on the counter's shard's
hash slot), so a process killed mid-flush never leaves the increment stored without its
receipt: restarted, it would answer "void" to a retry and the retry would apply again.
It also stores this node's reservations (its grants of idempotency keys,
node/coordination/fencing.py) and deletes the ended ones; they are per granting node.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from crdt import CodecError, CounterOverflowError, PNCounter, codec
from crdt.codec import MAX_ACTOR_BYTES
from crdt.gcounter import UINT64_MAX
from node.base.keys import Key
from node.storage.receipt_book import DirtyReceipt, DirtyReservation

Entry = tuple[Key, int, PNCounter]  # key, shard, state
# One stored slot as a load reads it: key, shard, actor, p, n. In a page of them a counter's
# slots are adjacent and share one key object, and no counter is split between two pages.
SlotRow = tuple[Key, int, str, int, int]
NamedRow = tuple[str, int, str | None, int, int]  # name, shard, actor (None: the page's), p, n


@dataclass(frozen=True, slots=True)
class NamedSlots:
    """A page of counters of one tenant and namespace with one slot each (no name twice),
    checked like any input: what a start mostly loads, read with no Python code per row
    (durable_sqlite.py) and taken into the store in one tight loop (store_load.py)."""

    tenant: str
    namespace: str
    actor: str  # the actor of the rows whose actor is None
    rows: list[NamedRow]

    def slot_rows(self) -> list[SlotRow]:
        tenant, namespace, usual = self.tenant, self.namespace, self.actor
        return [
            ((tenant, namespace, name), shard, usual if actor is None else actor, p, n)
            for name, shard, actor, p, n in self.rows
        ]


SlotPage = list[SlotRow] | NamedSlots  # what a load yields: either kind of page
ReceiptEntry = DirtyReceipt  # key, shard, idempotency key, receipt
ReservationEntry = DirtyReservation  # key, shard, idempotency key, reservation or None
RECEIPT_PAGE = 10_000  # receipts per page of a load: memory per step stays bounded


class DurableError(Exception):
    """The durable replica could not be reached or answered wrongly."""


class DurableReplica(Protocol):
    name: str
    # False for a copy that is this node's alone (SQLite in its data dir), True for one the
    # cluster shares (Redis: every replica's copy of a counter lives in the same keys)
    shared: bool

    async def write(self, entries: Sequence[Entry]) -> None:
        """Merge these states into the durable copy, slot by slot (max)."""

    async def load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        """Every counter of these shards, as stored."""

    def load_slots(self, shards: Collection[int]) -> AsyncIterator[list[SlotRow]]:
        """Every stored slot of these shards' counters, in pages of rows checked like any
        input (see SlotRow): what a start loads, without a state object per counter."""

    def load_pages(self, shards: Collection[int]) -> AsyncIterator[SlotPage]:
        """load_slots's slots, some pages of them perhaps as NamedSlots: what a start loads."""

    async def write_changes(
        self,
        entries: Sequence[Entry],
        receipts: Sequence[ReceiptEntry],
        reservations: Sequence[ReservationEntry],
        window_ms: int,
        now_ms: int,
    ) -> int:
        """One flush: `write` and `write_receipts` at once, each counter's state and its
        receipts in one atomic write; and this node's reservations stored (None: deleted),
        kept until their `until_ms`. Returns how many expired entries it dropped."""

    def load_reservations(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReservationEntry]]:
        """This node's unexpired reservations of these shards' counters, in pages."""

    async def write_receipts(
        self, entries: Sequence[ReceiptEntry], window_ms: int, now_ms: int
    ) -> int:
        """Keep these idempotency receipts until a window after their time (the first one
        stored wins), and drop a bounded number of expired ones, so what is stored stays
        bounded by the receipts of the window; returns how many expired ones it dropped
        (0: none are left)."""

    def load_receipts(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReceiptEntry]]:
        """The unexpired receipts of these shards' counters, in pages of at most
        RECEIPT_PAGE, however many there are."""

    async def stored_shards(self) -> set[int]:
        """The shards a start loads beside those the node replicates, to hand them over:
        those of which a copy that is this node's alone (SQLite) holds slots (a hint, a
        lost shard whose hand-over waited for a replica when the node stopped). None for a
        copy the cluster shares (Redis): the owners load those very keys themselves."""

    async def forget_shard(self, shard: int) -> None:
        """Delete a shard handed over to its owners from a copy that is this node's alone,
        so later starts do not load it again; nothing for a shared copy."""

    async def last_incarnation(self, node_id: str, current: int) -> int:
        """Record `current` as node_id's incarnation unless a higher one is known; return the
        highest known before this call (0 if none), so a node whose data dir was lost still
        takes a new actor id."""

    async def ping(self) -> None:
        """Raise DurableError unless the replica answers."""

    async def close(self) -> None: ...


@runtime_checkable
class MarkedReplica(Protocol):
    """A shared durable replica that can come back empty while the nodes run (Redis after a
    FLUSHALL, a restart without persistence, a failover to an empty replica): each node keeps
    a mark per shard it wrote there, whose absence tells it to write all it answers for again
    (write_behind.py)."""

    async def unmarked_shards(self, shards: Collection[int]) -> list[int]:
        """Those of these shards whose mark, this node's, is missing."""

    async def mark_shards(self, shards: Collection[int]) -> None:
        """Write this node's marks of these shards."""

    async def record_incarnations_again(self) -> None:
        """Record again every incarnation last_incarnation recorded (the replica lost them)."""


# What json.dumps(ensure_ascii=False) escapes in a string: quotes, backslashes, controls.
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\\"]').search


def member(key: Key) -> str:
    """A key as one unambiguous string (names cannot hold every separator; JSON can).

    json.dumps's exact text, built directly when no part needs escaping (nearly every
    key): a flush names every counter it writes, and json.dumps was most of its CPU."""
    tenant, namespace, name = key
    if _NEEDS_ESCAPE(tenant) or _NEEDS_ESCAPE(namespace) or _NEEDS_ESCAPE(name):
        return json.dumps(key, separators=(",", ":"), ensure_ascii=False)
    return f'["{tenant}","{namespace}","{name}"]'


def key_of(text: str) -> Key:
    try:
        return codec.key_from_wire(json.loads(text))
    except (ValueError, CodecError) as error:
        raise DurableError(f"corrupt key {text[:80]!r} in the durable replica") from error


class SlotChecker:
    """Checks stored slots as state_of does: each actor id once, each count every time."""

    def __init__(self) -> None:
        self.actors: set[object] = set()  # those checked already

    def check(self, actor: object, p: object, n: object) -> None:
        if actor not in self.actors:
            if type(actor) is not str or not actor or len(actor.encode()) > MAX_ACTOR_BYTES:
                raise DurableError(f"corrupt slot {actor!r} in the durable replica")
            self.actors.add(actor)
        if type(p) is not int or type(n) is not int or not (0 <= p <= UINT64_MAX >= n >= 0):
            raise DurableError(f"corrupt slot {actor!r} in the durable replica")


def slot_rows(page: SlotPage) -> list[SlotRow]:
    return page.slot_rows() if isinstance(page, NamedSlots) else page


def states_of(rows: Iterable[SlotRow]) -> list[tuple[Key, PNCounter]]:
    """The (key, state) pairs that slot rows (each counter's adjacent) make."""
    grouped: list[tuple[Key, dict[str, tuple[int, int]]]] = []
    for key, _, actor, p, n in rows:
        if not grouped or grouped[-1][0] != key:
            grouped.append((key, {}))
        grouped[-1][1][actor] = (p, n)
    return [(key, state_of(slots)) for key, slots in grouped]


def state_of(slots: dict[str, tuple[int, int]]) -> PNCounter:
    """A state from stored (actor -> (p, n)) slots, checked like any input."""
    if len(slots) == 1:  # most counters: one actor ever wrote them
        [(actor, (p, n))] = slots.items()
        if not actor or len(actor.encode()) > MAX_ACTOR_BYTES:
            raise DurableError(f"corrupt slot {actor!r} in the durable replica")
        try:
            return PNCounter.from_slot(actor, p, n)
        except CounterOverflowError:
            raise DurableError(f"corrupt slot {actor!r} in the durable replica") from None
    state = PNCounter.empty()
    for actor, (p, n) in slots.items():
        bad = not actor or len(actor.encode()) > MAX_ACTOR_BYTES
        if bad or not (0 <= p <= UINT64_MAX and 0 <= n <= UINT64_MAX):
            raise DurableError(f"corrupt slot {actor!r} in the durable replica")
        state = state.merge(PNCounter.from_slot(actor, p, n))
    return state

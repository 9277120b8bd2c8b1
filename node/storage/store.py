"""The node's in-memory replica: one PN-counter per key, indexed by shard, packed.

Every change goes through `increment` or `merge`, which also keep each shard's digest for
anti-entropy up to date in O(actors): a shard's digest is the sum, modulo 2**64, of each
key's slots weighted by a hash of the key and of the actor. Equal shard states give equal
digests whatever order they were reached in, and comparing two shards costs one integer.
Idempotency receipts have their own per-shard digests over settled time buckets
(receipt_digest.py), kept up to date in O(1) per receipt by the receipt book.
The durable stores (Redis, PostgreSQL) arrive behind this same interface.

Memory (issue 13: a million counters per node). A counter is one bytes record in nested dicts
shard -> tenant -> namespace -> name: a 16-byte header (the key's weight and its current
share of the shard digest) then its packed state (crdt/packed.py: 20 bytes per actor, the
actor as an index into this store's actor table). No object, tuple or set entry per counter
besides the record and its name, so the shard, the per-namespace listing index and the
digest bookkeeping cost nothing more. Changes work on the packed form; states leave as
PNCounter objects built on demand (`get`, `merge`, `take_dirty`...), which costs more than
the packed work itself, so hot paths use the slot-level calls that build none
(`increment_slot`, `merge_slot`, `value`, `in`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

from crdt import CounterOverflowError, PNCounter, SlotFullError
from crdt import packed as pk
from crdt.gcounter import UINT64_MAX, GCounter, _gcounter
from crdt.pncounter import _pncounter, with_covered
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.incarnation import incarnation_of
from node.storage.store_dirty import DirtyCounters
from node.storage.store_load import LoadedCounters
from node.storage.store_reads import NamespaceReads
from node.storage.store_receipts import StoreReceipts
from ring import hash64

MASK64 = (1 << 64) - 1


DEFAULT_RECEIPT_WINDOW_MS = 86_400_000

# A counter's record: (key weight, the key's share of its shard digest), then its packed state.
HEADER = struct.Struct("<QQ")  # a weight is odd: a record starting with byte 0 is unweighed
HEADER_SIZE = HEADER.size
_read_header = HEADER.unpack_from
_pack_header = HEADER.pack
_EMPTY_G = GCounter.empty()
_EMPTY_PN = PNCounter.empty()

Names = dict[str, bytes]  # name -> record, for one (shard, tenant, namespace)


class CounterStore(DirtyCounters, LoadedCounters, StoreReceipts, NamespaceReads):
    def __init__(
        self,
        shard_of: Callable[[Key], int],
        receipt_window_ms: int = DEFAULT_RECEIPT_WINDOW_MS,
        track_changes: bool = False,
    ) -> None:
        DirtyCounters.__init__(self, track_changes)
        StoreReceipts.__init__(self, receipt_window_ms, shard_of)
        self._shard_of = shard_of
        self._last_key: Key | None = None  # the key _shard answered last, and its shard
        self._last_shard = 0
        # shard -> tenant -> namespace -> name -> record (HEADER, then the packed state)
        self._shards: dict[int, dict[str, dict[str, Names]]] = {}
        self._count = 0  # records held
        self.shards_dropped = 0  # drop_shard calls so far
        self.drops: dict[int, int] = {}  # per shard: drop_shard calls so far (node/realtime)
        self._weights: list[tuple[int, int]] = []  # by actor index: (p weight, n weight)
        self._digests: dict[int, int] = {}
        # node id -> the highest incarnation of it in any slot this store ever held: what a
        # node that lost its data dir must learn before it takes writes (cluster/identity.py)
        self._incarnations: dict[str, int] = {}
        self._tenant_counts: dict[int, dict[str, int]] = {}  # per shard: counters per tenant
        self._unweighed: set[int] = set()  # shards that may hold loaded, unweighed records

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: Key) -> bool:
        return self.has(key)

    def has(self, key: Key, shard: int = -1) -> bool:
        """Whether key is held, without building its state. `shard`: key's, if the caller
        has it (-1: hash the key)."""
        return self._record(key, shard) is not None

    def incarnations(self) -> dict[str, int]:
        """Node id -> the highest incarnation of it in any slot this store has held."""
        return dict(self._incarnations)

    # -- records ------------------------------------------------------------------------------

    def _names(self, shard: int, key: Key) -> Names | None:
        """The names of key's (shard, tenant, namespace), None when it holds none."""
        tenants = self._shards.get(shard)
        if tenants is None:
            return None
        spaces = tenants.get(key[0])
        return None if spaces is None else spaces.get(key[1])

    def _shard(self, key: Key) -> int:
        """shard_of(key), remembered for the last key object asked: a batch op asks for the
        same key object two or three times in a row (admit, apply, answer)."""
        if key is self._last_key:
            return self._last_shard
        shard = self._last_shard = self._shard_of(key)
        self._last_key = key
        return shard

    def _record(self, key: Key, shard: int = -1) -> bytes | None:
        tenants = self._shards.get(self._shard(key) if shard < 0 else shard)
        spaces = None if tenants is None else tenants.get(key[0])
        names = None if spaces is None else spaces.get(key[1])
        return None if names is None else names.get(key[2])

    def _weigh_new(self) -> None:
        """Weigh the actors interned since the last call (pack interns them)."""
        actors, weights = self._actors.actors, self._weights
        for actor in actors[len(weights) :]:
            encoded = actor.encode()
            weights.append((hash64(b"p" + encoded) | 1, hash64(b"n" + encoded) | 1))
            parsed = incarnation_of(actor)
            if parsed is not None and parsed[1] > self._incarnations.get(parsed[0], 0):
                self._incarnations[parsed[0]] = parsed[1]

    def _share(self, slots: bytes, weight: int) -> int:
        total = 0
        weights = self._weights
        for index, p, n in pk.SLOT.iter_unpack(slots):
            p_weight, n_weight = weights[index]
            total += p * p_weight + n * n_weight
        return (total * weight) & MASK64

    def _put(
        self,
        shard: int,
        key: Key,
        names: Names | None,
        record: bytes,
        share: int,
        old: int | None,
        changed: Collection[str] | None,
    ) -> None:
        """Hold record for key, whose names dict is `names` (None: not made yet), replacing
        a record whose share was `old` (None: key is new here); `changed` holds (at least)
        the actors whose slots changed, None: all of them."""
        if names is None:
            tenants = self._shards.setdefault(shard, {})
            names = tenants.setdefault(key[0], {}).setdefault(key[1], {})
        if old is None:
            self._count += 1
            counts = self._tenant_counts.setdefault(shard, {})
            counts[key[0]] = counts.get(key[0], 0) + 1
        changes = self._changes
        if changes is not None:  # the change tap's mark, inline: once per write
            marks = changes.get(shard)
            if marks is None:
                marks = changes[shard] = {}
            if key not in marks:
                previous = None if old is None else names.get(key[2])
                marks[key] = None if previous is None else pk.value(previous, HEADER_SIZE)
        names[key[2]] = record
        self._digests[shard] = (self._digests.get(shard, 0) + share - (old or 0)) & MASK64
        self._put_dirty(shard, key, changed)
        self._history_dirty.add(key)

    def _shard_numbers(self) -> list[int]:
        return list(self._shards)

    def _shard_records(self, shard: int) -> Iterator[tuple[Key, bytes]]:
        for tenant, spaces in self._shards.get(shard, {}).items():
            for namespace, names in spaces.items():
                for name, record in names.items():
                    yield (tenant, namespace, name), record

    # -- reads and changes --------------------------------------------------------------------

    def _lookup(self, key: Key, shard: int = -1) -> tuple[int, Names | None, bytes | None]:
        """(shard, its names dict for key's tenant and namespace or None, key's record or None).
        `shard`: key's, if the caller has it (-1: hash the key)."""
        if shard < 0:
            shard = self._shard(key)
        tenants = self._shards.get(shard)
        spaces = None if tenants is None else tenants.get(key[0])
        names = None if spaces is None else spaces.get(key[1])
        record = None if names is None else names.get(key[2])
        if record is not None and not record[0]:  # loaded, not weighed yet (store_load.py)
            assert names is not None
            record = self._weigh(shard, names, key, record)
        return shard, names, record

    def get(self, key: Key) -> PNCounter | None:
        record = self._record(key)
        return None if record is None else pk.unpack(record[HEADER_SIZE:], self._actors)

    def value(self, key: Key, shard: int = -1) -> int | None:
        """get(key).value() without building the state; None when key is not held.
        `shard`: key's, if the caller has it (-1: hash the key)."""
        record = self._record(key, shard)
        return None if record is None else pk.value(record, HEADER_SIZE)

    def version(self, key: Key, shard: int) -> int | None:
        """The sum of key's slots, p and n (crdt/packed.py): grows with every change of its
        state and never falls, a decrement's included; None when key is not held. Its shard
        is an argument: a caller that has it saves hashing the key."""
        names = self._names(shard, key)
        record = None if names is None else names.get(key[2])
        return None if record is None else pk.version(record, HEADER_SIZE)

    def increment(self, key: Key, actor: str, delta: int) -> tuple[PNCounter, PNCounter]:
        """Apply delta under actor; return the new state and the changed slot (the delta)."""
        slots, p, n = self._increment(key, actor, delta)
        state = pk.unpack(slots, self._actors)
        if delta == 0:
            return state, _EMPTY_PN
        if delta > 0:
            return state, _pncounter(_gcounter({actor: p}), _EMPTY_G)
        return state, _pncounter(_EMPTY_G, _gcounter({actor: n}))

    def increment_slot(self, key: Key, actor: str, delta: int, shard: int = -1) -> tuple[int, int]:
        """increment without building states: actor's new (p, n) slot of key. The delta
        increment returns is that slot's p half when delta > 0, its n half when < 0.
        `shard`: key's, if the caller has it (-1: hash the key)."""
        _, p, n = self._increment(key, actor, delta, shard)
        return p, n

    def _increment(
        self, key: Key, actor: str, delta: int, shard: int = -1
    ) -> tuple[bytes, int, int]:
        """Apply delta under actor: (key's new packed state, actor's new p, n)."""
        shard, names, record = self._lookup(key, shard)
        index = self._actors.ids.get(actor)
        new_actor = index is None
        if index is None:  # interned once the increment is accepted: the largest index
            index = len(self._actors)
        if record is None:
            weight, old_share, slots = _weight(key), 0, pk.EMPTY
        else:
            weight, old_share = _read_header(record)
            slots = record[HEADER_SIZE:]
        try:
            new, p, n = pk.increment(slots, index, delta)  # raises before anything is stored
        except SlotFullError:
            raise SlotFullError(f"slot {actor!r} of {key!r} would exceed uint64") from None
        if new is slots:  # a zero delta: a new key is held (empty), nothing else changes
            if record is None:
                self._put(shard, key, names, _pack_header(weight, 0), 0, None, ())
            return slots, p, n
        if new_actor:
            self._actors.index(actor)
            self._weigh_new()
        p_weight, n_weight = self._weights[index]
        grown = delta * p_weight if delta > 0 else -delta * n_weight
        share = (old_share + grown * weight) & MASK64
        old = None if record is None else old_share
        self._put(shard, key, names, _pack_header(weight, share) + new, share, old, (actor,))
        return new, p, n

    def reset(self, key: Key) -> tuple[PNCounter, PNCounter]:
        """Clear what this replica has observed of key; return the new state and the delta
        to replicate: the floor slots that changed, with the slots they cover. A replica
        that missed a slot and got its floor alone would read the counter below zero."""
        old = self.get(key)
        if old is None:
            return PNCounter.empty(), PNCounter.empty()
        new = old.reset()
        if new is not old:
            self.merge(key, new)
        return new, new.restricted_to(with_covered(new.delta_since(old).actors()))

    def merge(self, key: Key, incoming: PNCounter) -> PNCounter:
        """Merge incoming into key's state; return the merged state."""
        shard, names, record = self._lookup(key)
        if record is None:
            if incoming.is_empty():
                return incoming
            slots = pk.pack(incoming, self._actors)
            if len(self._weights) < len(self._actors):
                self._weigh_new()
            weight = _weight(key)
            share = self._share(slots, weight)
            self._put(shard, key, names, _pack_header(weight, share) + slots, share, None, None)
            return incoming
        old = slots = record[HEADER_SIZE:]
        grown = 0
        p_slots, n_slots = incoming.p.slots, incoming.n.slots
        ids, weights = self._actors.ids, self._weights
        for actor in (p_slots.keys() | n_slots.keys()) if n_slots else p_slots:
            index = ids.get(actor)
            if index is None:
                index = self._actors.index(actor)
                self._weigh_new()
            slots, grown_p, grown_n = pk.merge_slot(
                slots, index, p_slots.get(actor, 0), n_slots.get(actor, 0)
            )
            if grown_p or grown_n:
                p_weight, n_weight = weights[index]
                grown += grown_p * p_weight + grown_n * n_weight
        if slots is not old:
            weight, old_share = _read_header(record)
            share = (old_share + grown * weight) & MASK64
            actors = (p_slots.keys() | n_slots.keys()) if n_slots else p_slots.keys()
            record = _pack_header(weight, share) + slots
            self._put(shard, key, names, record, share, old_share, actors)  # only these can change
        return pk.unpack(slots, self._actors)

    def merge_slot(self, key: Key, actor: str, p: int, n: int, shard: int = -1) -> int:
        """merge(key, PNCounter.from_slot(actor, p, n)) without building states; returns
        key's share after it (what share(key) answers). CounterOverflowError, and nothing
        changes, unless p and n are uint64s. `shard`: key's, if the caller has it (a
        replication frame's were found checking that they are held here)."""
        for count in (p, n):
            if type(count) is not int or not 0 <= count <= UINT64_MAX:
                raise CounterOverflowError(f"slot count {count!r} is not a uint64")
        shard, names, record = self._lookup(key, shard)
        if record is None:
            if not p and not n:
                return 0
            weight, old_share, old = _weight(key), 0, pk.EMPTY
        else:
            weight, old_share = _read_header(record)
            old = record[HEADER_SIZE:]
        index = self._actors.ids.get(actor)
        if index is None:
            index = self._actors.index(actor)
            self._weigh_new()
        slots, grown_p, grown_n = pk.merge_slot(old, index, p, n)
        if slots is old:
            return int(old_share)
        p_weight, n_weight = self._weights[index]
        share = (old_share + (grown_p * p_weight + grown_n * n_weight) * weight) & MASK64
        previous = None if record is None else old_share
        self._put(shard, key, names, _pack_header(weight, share) + slots, share, previous, (actor,))
        return share

    def merge_share(self, key: Key, incoming: PNCounter) -> int:
        """merge(key, incoming) without building the merged state; returns key's share after
        it. A state of one actor's slot (what a keyed write replicates) takes merge_slot's
        path, which unpacks nothing."""
        p_slots, n_slots = incoming.p.slots, incoming.n.slots
        if len(p_slots) == 1 and (not n_slots or n_slots.keys() == p_slots.keys()):
            [(actor, p)] = p_slots.items()
            return self.merge_slot(key, actor, p, n_slots.get(actor, 0))
        self.merge(key, incoming)
        return self.share(key)

    def merge_many(self, entries: Iterable[tuple[Key, PNCounter]]) -> None:
        for key, state in entries:
            self.merge(key, state)

    def merge_carried(
        self, entries: Iterable[tuple[Key, PNCounter, Mapping[str, Receipt]]]
    ) -> None:
        """Merge states with the receipts that travel beside them (hand-off, anti-entropy).
        A counter new here arrives rather than changes: the change tap does not see it."""
        for key, state, found in entries:
            if found:
                self._receipts.add_many(key, found)
            arrives = (
                self._changes is not None
                and not self._change_pending(key)
                and self._record(key) is None
            )
            self.merge(key, state)
            if arrives:
                self._arrived(key)

    def shard_shares(self, shard: int) -> list[tuple[Key, int, int]]:
        """(key, key weight, share) for each key of a shard: its anti-entropy fingerprint."""
        if shard in self._unweighed:
            self._weigh_shard(shard)
        return [(key, *_read_header(record)) for key, record in self._shard_records(shard)]

    def shard_entries(self, shard: int) -> list[tuple[Key, PNCounter]]:
        state = self._state
        return [(key, state(record)) for key, record in self._shard_records(shard)]

    def shard_carried(
        self, shard: int, now_ms: int
    ) -> list[tuple[Key, PNCounter, dict[str, Receipt]]]:
        """A shard's counters as a hand-off ships them: each state with its receipts within
        the window, and counters that hold receipts only (batch claims) with an empty state."""
        book, state = self._receipts, self._state
        held = dict(self._shard_records(shard))
        carried = [(key, state(record), book.of(key, now_ms)) for key, record in held.items()]
        empty = PNCounter.empty()
        carried.extend(
            (key, empty, book.of(key, now_ms))
            for key in book.keys_of_shard(shard)
            if key not in held
        )
        return carried

    def share(self, key: Key) -> int:
        """The key's share of its shard digest: equal states of a key have equal shares."""
        record = self._lookup(key)[2]
        return 0 if record is None else int(_read_header(record)[1])

    def receipt_summaries(self, shard: int, lo: int, hi: int) -> list[tuple[Key, int, int]]:
        """(key, key weight, its receipts' digest in [lo, hi)) for each counter of the
        shard holding receipts: what anti-entropy compares when receipt digests differ."""
        weight = self.key_weight
        return [(key, weight(key), total) for key, total in self._receipts.summaries(shard, lo, hi)]

    def key_weight(self, key: Key) -> int:
        record = self._lookup(key)[2]
        return _weight(key) if record is None else int(_read_header(record)[0])

    def digest(self, shard: int) -> int:
        """Order-independent hash of a shard's keys and states (0 when empty)."""
        if shard in self._unweighed:
            self._weigh_shard(shard)
        return self._digests.get(shard, 0)

    def digests(self, shards: Iterable[int]) -> list[int]:
        """digest(shard) of each of these shards, in their order."""
        if self._unweighed:
            return [self.digest(shard) for shard in shards]
        get = self._digests.get
        return [get(shard, 0) for shard in shards]

    def drop_shard(self, shard: int) -> int:
        """Forget a shard this node no longer replicates, its receipts too (a receipt without
        the slot it answers for would replay an increment this node no longer holds);
        returns how many keys went."""
        self.shards_dropped += 1  # hints.py: an actor's slots may now be unknown here
        self.drops[shard] = self.drops.get(shard, 0) + 1
        self._receipts.drop_shard(shard)
        self._name_order = None  # listings' orders may hold the shard's names: made anew
        self._dirty.pop(shard, None)
        dropped = 0
        for spaces in self._shards.pop(shard, {}).values():
            for names in spaces.values():
                dropped += len(names)
        self._count -= dropped
        self._digests.pop(shard, None)
        self._unweighed.discard(shard)
        self._tenant_counts.pop(shard, None)
        return dropped


def _weight(key: Key) -> int:
    """A counter's weight in its shard's digest, and its name in per-key fingerprints."""
    return hash64("/".join(key).encode()) | 1

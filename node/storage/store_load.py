"""The start of a CounterStore: counters read from the durable replica, taken in bulk.

A base class of CounterStore (store.py), apart so that each module stays small. A start
loads every counter the node holds (a million, issue 13), so this path builds each record
straight from its stored slots: no PNCounter, no lookup through the shard function (the
stored shard is the one the store filed the counter under when it was written), and the
shard's tenant counts summed as it goes. Most pages are named ones (durable.NamedSlots:
one tenant and namespace, one slot per counter), taken in one loop of a few dict
operations and a struct pack per counter, the counts added once per page and shard.
Loaded counters are clean: neither written back nor recorded in the history again (a
million of them would keep the write-behind busy for a minute after each start, and so
delay the next stop). A counter already held (merged from a peer while the load ran) is
merged as usual: what it held beyond the durable copy still goes out.

Weights wait: a loaded record's header is zeros (a real weight is odd, so its first byte
never is), and its shard is noted unweighed. Its key weight (a hash of the key) and digest
share are computed when something needs them: a change or a share asked of the key
(`_lookup` weighs the record), a digest or the fingerprints of its shard (the whole shard),
or `weigh_unweighed`, which the gossip loop runs after a load, a shard per loop turn. Reads
need neither, so a node is ready (answers every read exactly) a third sooner.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter

from crdt import PNCounter
from crdt import packed as pk
from node.base.keys import Key
from node.storage.durable import NamedSlots, SlotPage, SlotRow

MASK64 = (1 << 64) - 1
HEADER = struct.Struct("<QQ")  # store.HEADER: key weight, the key's share of its shard digest
UNWEIGHED = bytes(HEADER.size)  # the header of a loaded record before it is weighed
UNWEIGHED_SLOT = struct.Struct("<16xIQQ")  # UNWEIGHED then one packed slot: most records
_blake2b = hashlib.blake2b
_actor_of = itemgetter(2)

Names = dict[str, bytes]


class LoadedCounters:
    """Bulk load over the store's records (see CounterStore)."""

    # the store's (CounterStore sets them)
    _shards: dict[int, dict[str, dict[str, Names]]]
    _digests: dict[int, int]
    _tenant_counts: dict[int, dict[str, int]]
    _count: int
    _actors: pk.ActorTable
    _weights: list[tuple[int, int]]
    _dirty: dict[int, dict[Key, Collection[str] | None]]
    _history_dirty: set[Key]
    _unweighed: set[int]
    arrivals: dict[int, int]

    def _weigh_new(self) -> None:
        raise NotImplementedError

    def _arrived(self, key: Key) -> None:
        raise NotImplementedError

    def _share(self, slots: bytes, weight: int) -> int:
        raise NotImplementedError

    def _lookup(self, key: Key) -> tuple[int, object, bytes | None]:
        raise NotImplementedError

    def merge(self, key: Key, incoming: PNCounter) -> PNCounter:
        raise NotImplementedError

    def load_page(self, page: SlotPage) -> int:
        """Hold the counters of a page a durable replica's load_pages yields; how many."""
        if isinstance(page, NamedSlots):
            return self.load_named(page)
        return self.load_slots(page)

    def load_named(self, page: NamedSlots) -> int:
        """Hold the counters of a named page (one slot each, no name twice); returns how
        many. `_hold_loaded` for each, in one loop that leaves the counts to the end."""
        tenant, namespace, rows = page.tenant, page.namespace, page.rows
        ids = self._actors.ids
        index_of: dict[str | None, int] = {}  # actor -> its index here, None: page.actor's
        for actor in set(map(_actor_of, rows)):
            named = page.actor if actor is None else actor
            if named not in ids:
                self._actors.index(named)
                self._weigh_new()
            index_of[actor] = ids[named]
        held: dict[int, Names] = {}  # shard -> its names of tenant and namespace
        before: dict[int, int] = {}  # shard -> how many those held before this page
        late: list[tuple[str, str | None, int, int]] = []  # name, actor, p, n of counters held
        pack = UNWEIGHED_SLOT.pack
        for name, shard, actor, p, n in rows:
            if not (p or n):
                continue  # an empty state is not held
            names = held.get(shard)
            if names is None:
                names = held[shard] = self._names_made(shard, tenant, namespace)
                before[shard] = len(names)
            if name in names:
                late.append((name, actor, p, n))
            else:
                names[name] = pack(index_of[actor], p, n)
        loaded = 0
        for shard, names in held.items():
            added = len(names) - before[shard]
            if added:
                # loaded, not changed: the change tap never sees them (see _hold_loaded)
                self.arrivals[shard] = self.arrivals.get(shard, 0) + added
                self._count += added
                counts = self._tenant_counts.setdefault(shard, {})
                counts[tenant] = counts.get(tenant, 0) + added
                self._unweighed.add(shard)
                loaded += added
        for name, actor, p, n in late:  # merged from a peer meanwhile: merged as any state
            named = page.actor if actor is None else actor
            self.merge((tenant, namespace, name), PNCounter.from_slot(named, p, n))
        return loaded + len(late)

    def _names_made(self, shard: int, tenant: str, namespace: str) -> Names:
        """The names of (shard, tenant, namespace), made empty if there were none."""
        tenants = self._shards.get(shard)
        if tenants is None:
            tenants = self._shards[shard] = {}
        spaces = tenants.get(tenant)
        if spaces is None:
            spaces = tenants[tenant] = {}
        names = spaces.get(namespace)
        if names is None:
            names = spaces[namespace] = {}
        return names

    def load_slots(self, rows: Sequence[SlotRow]) -> int:
        """Hold the counters of a page of slot rows read from the durable replica (each
        counter's rows adjacent, checked by the durable replica); returns how many."""
        loaded = 0
        key: Key | None = None
        shard = 0
        slots: list[tuple[int, int, int]] = []
        ids = self._actors.ids
        for row_key, row_shard, actor, p, n in rows:
            index = ids.get(actor)
            if index is None:
                index = self._actors.index(actor)
                self._weigh_new()
            if row_key is key:
                slots.append((index, p, n))
                continue
            if key is not None:
                loaded += self._hold_loaded(key, shard, slots)
            key, shard, slots = row_key, row_shard, [(index, p, n)]
        if key is not None:
            loaded += self._hold_loaded(key, shard, slots)
        return loaded

    def _hold_loaded(self, key: Key, shard: int, slots: list[tuple[int, int, int]]) -> int:
        """Hold one loaded counter's slots (actor index, p, n), unweighed; 1 if held now."""
        if len(slots) == 1:
            index, p, n = slots[0]
            if not p and not n:
                return 0  # an empty state is not held
            record = UNWEIGHED_SLOT.pack(index, p, n)
        else:
            slots = sorted(slot for slot in slots if slot[1] or slot[2])
            if not slots:
                return 0
            record = UNWEIGHED + b"".join([pk.SLOT.pack(*slot) for slot in slots])
        tenant, namespace, name = key
        names = self._names_made(shard, tenant, namespace)
        if name in names:  # merged from a peer meanwhile: merged as any state
            self.merge(key, pk.unpack(record[HEADER.size :], self._actors))
            return 1
        names[name] = record
        # loaded, not changed: the change tap never sees it, so node/realtime re-reads the shard
        self.arrivals[shard] = self.arrivals.get(shard, 0) + 1
        self._count += 1
        counts = self._tenant_counts.get(shard)
        if counts is None:
            counts = self._tenant_counts[shard] = {}
        counts[tenant] = counts.get(tenant, 0) + 1
        self._unweighed.add(shard)
        return 1

    def _weigh(self, shard: int, names: Names, key: Key, record: bytes) -> bytes:
        """Weigh one loaded record of names (key's): its weight and share in its header,
        its share in the shard digest; returns the weighed record."""
        slots = record[HEADER.size :]
        weight = int.from_bytes(_blake2b("/".join(key).encode(), digest_size=8).digest()) | 1
        share = self._share(slots, weight)
        names[key[2]] = weighed = HEADER.pack(weight, share) + slots
        self._digests[shard] = (self._digests.get(shard, 0) + share) & MASK64
        return weighed

    def _weigh_shard(self, shard: int) -> int:
        """Weigh every loaded record of a shard; returns how many there were. `_weigh`,
        inlined: the first rounds after a start weigh a million records this way."""
        self._unweighed.discard(shard)
        weights, pack, one_slot = self._weights, HEADER.pack, pk.SLOT.unpack
        weighed = total = 0
        for tenant, spaces in self._shards.get(shard, {}).items():
            for namespace, names in spaces.items():
                prefix = f"{tenant}/{namespace}/"  # "/".join(key), as _weight hashes it
                for name, record in [(name, r) for name, r in names.items() if not r[0]]:
                    digest = _blake2b((prefix + name).encode(), digest_size=8).digest()
                    weight = int.from_bytes(digest) | 1
                    slots = record[HEADER.size :]
                    if len(slots) == pk.SLOT_SIZE:
                        index, p, n = one_slot(slots)
                        p_weight, n_weight = weights[index]
                        share = ((p * p_weight + n * n_weight) * weight) & MASK64
                    else:
                        share = self._share(slots, weight)
                    names[name] = pack(weight, share) + slots
                    total += share
                    weighed += 1
        self._digests[shard] = (self._digests.get(shard, 0) + total) & MASK64
        return weighed

    def unweighed(self) -> int:
        """How many shards may hold records a load left unweighed."""
        return len(self._unweighed)

    async def weigh_unweighed(self) -> int:
        """Weigh every shard a load left unweighed, one shard per loop turn (a few ms at a
        million counters), so the loop keeps serving; returns how many records."""
        weighed = 0
        while self._unweighed:
            weighed += self._weigh_shard(min(self._unweighed))
            await asyncio.sleep(0)
        return weighed

    def load_durable(self, entries: Iterable[tuple[Key, PNCounter]]) -> None:
        """States read from the durable replica (as `load_slots`, from states)."""
        dirty, history_dirty = self._dirty, self._history_dirty
        for key, state in entries:
            shard, _, record = self._lookup(key)
            if state.is_empty() or record is not None:
                self.merge(key, state)
                continue
            was_dirty = key in dirty.get(shard, ())
            was_history_dirty = key in history_dirty
            self.merge(key, state)
            if not was_dirty:
                dirty.get(shard, {}).pop(key, None)
            if not was_history_dirty:
                history_dirty.discard(key)
            self._arrived(key)  # loaded, not changed

"""The node's in-memory replica: one PN-counter per key, indexed by shard.

Every change goes through `increment` or `merge`, which also keep each shard's digest for
anti-entropy up to date in O(actors): a shard's digest is the sum, modulo 2**64, of each
key's slots weighted by a hash of the key and of the actor. Equal shard states give equal
digests whatever order they were reached in, and comparing two shards costs one integer.
Idempotency receipts have their own per-shard digests over settled time buckets
(receipt_digest.py), kept up to date in O(1) per receipt by the receipt book.
The durable stores (Redis, PostgreSQL) arrive behind this same interface.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.incarnation import incarnation_of
from node.storage.receipt_book import DirtyReceipt, DirtyReservation, ReceiptBook, Reservation
from ring import hash64

MASK64 = (1 << 64) - 1
_CLEAN: set[str] = set()  # marker: a key not in the dirty map


DEFAULT_RECEIPT_WINDOW_MS = 86_400_000


class CounterStore:
    def __init__(
        self, shard_of: Callable[[Key], int], receipt_window_ms: int = DEFAULT_RECEIPT_WINDOW_MS
    ) -> None:
        self._shard_of = shard_of
        self._states: dict[Key, PNCounter] = {}
        self.shards_dropped = 0  # drop_shard calls so far
        self._shard_keys: dict[int, set[Key]] = {}
        # per key: (shard, key weight, the key's current share of its shard digest)
        self._meta: dict[Key, tuple[int, int, int]] = {}
        self._digests: dict[int, int] = {}
        self._actor_weights: dict[str, tuple[int, int]] = {}
        # node id -> the highest incarnation of it in any slot this store ever held: what a
        # node that lost its data dir must learn before it takes writes (cluster/identity.py)
        self._incarnations: dict[str, int] = {}
        # changed since the last write to the durable replica: per key, the actors whose
        # slots changed (None: all of them), so a flush writes a changed slot, not the state
        self._dirty: dict[Key, set[str] | None] = {}
        self._history_dirty: set[Key] = set()  # changed since history last recorded them
        self._receipts = ReceiptBook(receipt_window_ms, shard_of)  # idempotency receipts
        self._tenant_counts: dict[int, dict[str, int]] = {}  # per shard: counters per tenant
        # (tenant, namespace) -> shard -> names: a listing reads its namespace, not every key
        self._names: dict[tuple[str, str], dict[int, set[str]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def incarnations(self) -> dict[str, int]:
        """Node id -> the highest incarnation of it in any slot this store has held."""
        return dict(self._incarnations)

    def get(self, key: Key) -> PNCounter | None:
        return self._states.get(key)

    def increment(self, key: Key, actor: str, delta: int) -> tuple[PNCounter, PNCounter]:
        """Apply delta under actor; return the new state and the changed slot (the delta)."""
        old = self._states.get(key)
        if old is None:
            old = PNCounter.empty()
        new = old.increment(actor, delta)  # raises before anything is stored
        changed = new.delta_since(old)
        self._put(key, new, changed)
        return new, changed

    def receipt(self, key: Key, idempotency_key: str, now_ms: int) -> Receipt | None:
        """The receipt of an idempotency key on key, unless it is older than the window."""
        return self._receipts.get(key, idempotency_key, now_ms)

    @property
    def reservations(self) -> ReceiptBook:
        """Where idempotency keys are reserved before they apply (reserve, reservation,
        release): beside the receipts, so a receipt and a reservation are decided together."""
        return self._receipts

    def add_receipt(self, key: Key, idempotency_key: str, receipt: Receipt) -> bool:
        return self._receipts.add(key, idempotency_key, receipt)

    def add_receipts(self, key: Key, incoming: Mapping[str, Receipt]) -> None:
        """Merge receipts of key, one by one (O(len(incoming)), whatever key holds)."""
        self._receipts.add_many(key, incoming)

    def load_receipts(self, entries: Iterable[DirtyReceipt]) -> None:
        """Receipts read from the durable replica: held, and not written back."""
        add = self._receipts.add
        for key, _, idempotency_key, receipt in entries:
            add(key, idempotency_key, receipt, durable=True)

    def load_reservations(self, entries: Iterable[DirtyReservation], now_ms: int) -> None:
        """This replica's grants read from the durable replica at start: held again."""
        restore = self._receipts.restore
        for key, _, idempotency_key, held in entries:
            if held is not None:
                restore(key, idempotency_key, held, now_ms)

    def reservations_in(self, shards: set[int], now_ms: int) -> dict[Key, dict[str, Reservation]]:
        """The live reservations of these shards' counters: what a PULL reply carries."""
        return self._receipts.reservations_in(shards, now_ms)

    def adopt_reservations(
        self, held: Mapping[Key, Mapping[str, Reservation]], now_ms: int
    ) -> None:
        """Reservations from a PULL reply: held here from now on, as if granted here."""
        adopt = self._receipts.adopt
        for key, by_idem in held.items():
            for idempotency_key, reservation in by_idem.items():
                adopt(key, idempotency_key, reservation, now_ms)

    def take_dirty_reservations(self) -> list[DirtyReservation]:
        """Reservations taken or ended since the last take (None: ended, to delete)."""
        return self._receipts.take_dirty_reservations()

    def mark_reservations_dirty(self, entries: Iterable[DirtyReservation]) -> None:
        self._receipts.mark_reservations_dirty(entries)

    def take_dirty_receipts(self) -> list[DirtyReceipt]:
        """Receipts added since the last take: (key, shard, idempotency key, receipt)."""
        return self._receipts.take_dirty()

    def mark_receipts_dirty(self, entries: Iterable[DirtyReceipt]) -> None:
        self._receipts.mark_dirty(entries)

    def receipts_flushed(self, entries: Iterable[DirtyReceipt]) -> None:
        """The flush that took these receipts committed: they are durable here now."""
        self._receipts.flushed(entries)

    def unflushed_receipts(self, key: Key) -> Mapping[str, Receipt]:
        """The counter's receipts not yet durable here, which every state of it sent must
        carry (node/coordination/idempotency.py); empty in one dict lookup when none."""
        return self._receipts.unflushed(key)

    def expire_receipts(self, now_ms: int) -> int:
        """Drop receipts older than the window (amortised O(1) per receipt)."""
        return self._receipts.expire(now_ms)

    def receipts_of(self, key: Key, now_ms: int) -> dict[str, Receipt]:
        """A counter's receipts within the window: what travels beside its state."""
        return self._receipts.of(key, now_ms)

    def receipt_count(self) -> int:
        return len(self._receipts)

    def reset(self, key: Key) -> tuple[PNCounter, PNCounter]:
        """Clear what this replica has observed of key; return the new state and the floor
        slots that changed (the delta to replicate)."""
        old = self._states.get(key)
        if old is None:
            return PNCounter.empty(), PNCounter.empty()
        new = old.reset()
        changed = new.delta_since(old)
        if new is not old:
            self._put(key, new, changed)
        return new, changed

    def merge(self, key: Key, incoming: PNCounter) -> PNCounter:
        old = self._states.get(key)
        if old is None:
            if incoming.is_empty():
                return incoming
            self._put(key, incoming, None)
            return incoming
        merged = old.merge(incoming)
        if merged is not old:
            self._put(key, merged, incoming)  # only slots of incoming's actors can change
        return merged

    def load_durable(self, entries: Iterable[tuple[Key, PNCounter]]) -> None:
        """States read from the durable replica at start: held, but neither written back
        nor recorded in the history again (a million of them would keep the write-behind
        busy for a minute after each start, and so delay the next stop). A counter already
        held is merged as usual: what it held beyond the durable copy still goes out."""
        dirty, history_dirty = self._dirty, self._history_dirty
        for key, state in entries:
            if key in self._states or state.is_empty():
                self.merge(key, state)
                continue
            was_dirty, was_history_dirty = key in dirty, key in history_dirty
            self._put(key, state, None)
            if not was_dirty:
                dirty.pop(key, None)
            if not was_history_dirty:
                history_dirty.discard(key)

    def merge_many(self, entries: Iterable[tuple[Key, PNCounter]]) -> None:
        for key, state in entries:
            self.merge(key, state)

    def merge_carried(
        self, entries: Iterable[tuple[Key, PNCounter, Mapping[str, Receipt]]]
    ) -> None:
        """Merge states with the receipts that travel beside them (hand-off, anti-entropy)."""
        for key, state, found in entries:
            if found:
                self._receipts.add_many(key, found)
            self.merge(key, state)

    def _put(self, key: Key, state: PNCounter, changed: PNCounter | None) -> None:
        """Store key's new state; `changed` holds (at least) the actors whose slots changed,
        None: all of them."""
        meta = self._meta.get(key)
        if meta is None:
            shard = self._shard_of(key)
            weight = _weight(key)
            self._shard_keys.setdefault(shard, set()).add(key)
            counts = self._tenant_counts.setdefault(shard, {})
            counts[key[0]] = counts.get(key[0], 0) + 1
            self._names.setdefault(key[:2], {}).setdefault(shard, set()).add(key[2])
            old_share = 0
        else:
            shard, weight, old_share = meta
        share = self._share(state, weight)
        self._states[key] = state
        self._meta[key] = (shard, weight, share)
        self._digests[shard] = (self._digests.get(shard, 0) + share - old_share) & MASK64
        if changed is None:
            self._dirty[key] = None
        else:
            self._put_dirty(key, changed)
        self._history_dirty.add(key)

    def _share(self, state: PNCounter, weight: int) -> int:
        total = 0
        weights = self._actor_weights
        for actor, count in state.p.slots.items():
            pair = weights.get(actor) or self._weigh(actor)
            total += count * pair[0]
        for actor, count in state.n.slots.items():
            pair = weights.get(actor) or self._weigh(actor)
            total += count * pair[1]
        return (total * weight) & MASK64

    def _weigh(self, actor: str) -> tuple[int, int]:
        pair = (hash64(b"p" + actor.encode()) | 1, hash64(b"n" + actor.encode()) | 1)
        self._actor_weights[actor] = pair
        parsed = incarnation_of(actor)
        if parsed is not None and parsed[1] > self._incarnations.get(parsed[0], 0):
            self._incarnations[parsed[0]] = parsed[1]
        return pair

    def take_dirty(
        self, writes: Callable[[int, str], bool] | None = None
    ) -> list[tuple[Key, int, PNCounter]]:
        """The changed counters (key, shard, their changed slots at their current values);
        they count as clean from now. Both durable replicas merge slot by slot, so the
        slots that did not change since the last flush need not go again. `writes(shard,
        actor)`: whether this node writes that slot (cluster/slot_owners.py); the others
        count as clean too."""
        dirty, self._dirty = self._dirty, {}
        meta, states = self._meta, self._states
        out = []
        for key, changed in dirty.items():
            state = states.get(key)
            if state is None:
                continue
            shard = meta[key][0]
            actors: Collection[str] | None = changed
            if writes is not None:
                actors = [a for a in (changed or state.actors()) if writes(shard, a)]
                if not actors:
                    continue
            if actors is not None and len(actors) < len(state.p) + len(state.n):
                state = state.restricted_to(actors)
            out.append((key, shard, state))
        return out

    def keys(self) -> list[Key]:
        """Every counter held, as a list (a snapshot: the store may change meanwhile)."""
        return list(self._states)

    def mark_slots_dirty(self, keys: Iterable[Key], writes: Callable[[int, str], bool]) -> int:
        """Mark the slots of these counters that `writes(shard, actor)` picks as changed, so
        the next flush writes them; returns how many counters had one."""
        marked = 0
        meta, states = self._meta, self._states
        for key in keys:
            state = states.get(key)
            if state is None:
                continue
            shard = meta[key][0]
            actors = [a for a in state.actors() if writes(shard, a)]
            if actors:
                found = self._dirty.get(key, _CLEAN)
                if found is _CLEAN:
                    self._dirty[key] = set(actors)
                elif found is not None:
                    found.update(actors)
                marked += 1
        return marked

    def mark_dirty(self, entries: Iterable[tuple[Key, int, PNCounter]]) -> None:
        """Put back counters whose write failed; their slots' latest values go next time."""
        for key, _, state in entries:
            self._put_dirty(key, state)

    def _put_dirty(self, key: Key, changed: PNCounter) -> None:
        actors = self._dirty.get(key, _CLEAN)
        if actors is _CLEAN:
            self._dirty[key] = {*changed.p.slots, *changed.n.slots}
        elif actors is not None:
            actors.update(changed.p.slots)
            actors.update(changed.n.slots)

    def take_history_dirty(self) -> list[tuple[Key, int, PNCounter]]:
        """Counters changed since the history last took them: (key, shard, state)."""
        dirty, self._history_dirty = self._history_dirty, set()
        meta, states = self._meta, self._states
        return [(key, meta[key][0], states[key]) for key in dirty if key in states]

    def dirty_count(self) -> int:
        return len(self._dirty)

    def shard_shares(self, shard: int) -> list[tuple[Key, int, int]]:
        """(key, key weight, share) for each key of a shard: its anti-entropy fingerprint."""
        meta = self._meta
        return [(key, *meta[key][1:]) for key in self._shard_keys.get(shard, ())]

    def shard_entries(self, shard: int) -> list[tuple[Key, PNCounter]]:
        return [(key, self._states[key]) for key in self._shard_keys.get(shard, ())]

    def shard_carried(
        self, shard: int, now_ms: int
    ) -> list[tuple[Key, PNCounter, dict[str, Receipt]]]:
        """A shard's counters as a hand-off ships them: each state with its receipts within
        the window, and counters that hold receipts only (batch claims) with an empty state."""
        states, book = self._states, self._receipts
        keys = self._shard_keys.get(shard, set()) | book.keys_of_shard(shard)
        empty = PNCounter.empty()
        return [(key, states.get(key, empty), book.of(key, now_ms)) for key in keys]

    def share(self, key: Key) -> int:
        """The key's share of its shard digest: equal states of a key have equal shares."""
        meta = self._meta.get(key)
        return 0 if meta is None else meta[2]

    def receipt_range(self, now_ms: int) -> tuple[int, int, int]:
        """(bucket ms, lo, hi): the settled receipt buckets [lo, hi) gossip compares now."""
        digests = self._receipts.digests
        return (digests.bucket_ms, *digests.covered(now_ms))

    def receipt_buckets_comparable(self, bucket_ms: int, lo: int, hi: int, now_ms: int) -> bool:
        """Whether a peer's range of receipt buckets can be compared with ours now."""
        digests = self._receipts.digests
        return bucket_ms == digests.bucket_ms and digests.comparable(lo, hi, now_ms)

    def receipt_shards(self) -> list[int]:
        """The shards holding any idempotency receipt."""
        return self._receipts.digests.shards()

    def receipt_digest(self, shard: int, lo: int, hi: int) -> int:
        """Order-independent hash of a shard's receipts stamped in buckets [lo, hi)."""
        return self._receipts.digests.digest(shard, lo, hi)

    def receipt_summaries(self, shard: int, lo: int, hi: int) -> list[tuple[Key, int, int]]:
        """(key, key weight, its receipts' digest in [lo, hi)) for each counter of the
        shard holding receipts: what anti-entropy compares when receipt digests differ."""
        meta = self._meta
        return [
            (key, meta[key][1] if key in meta else _weight(key), total)
            for key, total in self._receipts.summaries(shard, lo, hi)
        ]

    def receipts_between(self, key: Key, lo: int, hi: int) -> dict[str, Receipt]:
        """A counter's receipts stamped in buckets [lo, hi)."""
        return self._receipts.in_buckets(key, lo, hi)

    def key_weight(self, key: Key) -> int:
        meta = self._meta.get(key)
        return _weight(key) if meta is None else meta[1]

    def tenant_counts(self, shard: int) -> dict[str, int]:
        """How many counters each tenant has in a shard (read-only)."""
        return self._tenant_counts.get(shard, {})

    def digest(self, shard: int) -> int:
        """Order-independent hash of a shard's keys and states (0 when empty)."""
        return self._digests.get(shard, 0)

    def drop_shard(self, shard: int) -> int:
        """Forget a shard this node no longer replicates, its receipts too (a receipt without
        the slot it answers for would replay an increment this node no longer holds);
        returns how many keys went."""
        self.shards_dropped += 1  # hints.py: an actor's slots may now be unknown here
        self._receipts.drop_shard(shard)
        keys = self._shard_keys.pop(shard, set())
        for key in keys:
            del self._states[key]
            del self._meta[key]
            self._dirty.pop(key, None)
            self._names[key[:2]].pop(shard, None)
        self._digests.pop(shard, None)
        self._tenant_counts.pop(shard, None)
        return len(keys)

    def scan(
        self, tenant: str, namespace: str, prefix: str, after: str, limit: int, shards: set[int]
    ) -> list[tuple[str, PNCounter]]:
        """Names in (tenant, namespace) starting with prefix, sorted, greater than `after`:
        the first `limit` of them, from the namespace's own index."""
        by_shard = self._names.get((tenant, namespace), {})
        names = heapq.nsmallest(
            limit,
            (
                name
                for shard in shards
                for name in by_shard.get(shard, ())
                if name > after and name.startswith(prefix)
            ),
        )
        states = self._states
        return [(name, states[(tenant, namespace, name)]) for name in names]


def _weight(key: Key) -> int:
    """A counter's weight in its shard's digest, and its name in per-key fingerprints."""
    return hash64("/".join(key).encode()) | 1

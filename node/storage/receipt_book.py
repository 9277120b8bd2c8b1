"""Idempotency receipts in memory: one entry per (counter, idempotency key), expiring in order.

Each receipt is held once, in a map counter -> idempotency key -> Receipt, with an index
shard -> counters holding receipts, so looking one up, adding one, or marking one for the
durable replica costs O(1) however many the counter or the node holds, and what travels with
a shard's state (a hand-off pull, an anti-entropy push) or leaves with it (`drop_shard`) is
found without scanning the others. Nothing ever copies a counter's whole set on a write.
Receipts also enter a FIFO of (expiry ms, name); `expire(now_ms)` pops from its head while
the head has expired, so each receipt is dropped once, in amortised O(1), and the total held
is bounded by the receipts applied or learned within the window (plus the clock skew between
the nodes that stamped them: a receipt that arrives with an older stamp than the tail's
waits behind it).

A receipt older than the window is never answered (`get` checks its age), whatever the FIFO
holds, so expiry only bounds memory and never decides correctness.

Memory: about 340 bytes per receipt held, plus its idempotency key string (83 bytes for a
38-character key): tracemalloc over 100,000 receipts of one counter, CPython 3.12, counting
the counter map entry, the Receipt and its ints, and the FIFO entry and its name tuple (327
bytes on CPython 3.11 with the per-counter map); a receipt not yet flushed to the durable
replica also has a dirty-map entry until the next flush, and an entry in the unflushed index
(counter -> its receipts not yet durable: what every state of the counter this node sends
carries, node/coordination/idempotency.py) until that flush commits. The actor, fingerprint
and counter key are shared by all the receipts of one request. For anti-entropy each receipt
also counts in its shard's receipt digest (receipt_digest.py): one hash per receipt added or
dropped, about 2 us, and per (shard, 16 s) and (counter, 16 s) holding receipts one small
entry.

Reservations (node/coordination/fencing.py) sit beside the receipts: (counter, idempotency
key) -> the attempt holding it, until a receipt arrives for it (the usual end, a write
later) or the window ends. `reserve` reads the receipt and takes or reports the reservation
in one call, so a replica's answer is atomic. Memory: 265 bytes per reservation held
(tracemalloc over 100,000, its FIFO entry included), plus its key string; the expiry FIFO
is rebuilt once it holds twice the live reservations plus 1,024, so reservations that ended
with their receipt cost nothing after. A reservation taken, released or ended by its receipt
is also marked for the durable replica (`take_dirty_reservations`: the entry, or None for a
delete), so a replica's grants outlive its process like its receipts do: lost only if it
fails within the write-behind interval. One that ends before a flush took it is never
written; one a flush may have written is remembered (a set entry) so its end deletes it.
`restore` puts back the ones loaded at start, `adopt` the ones a hand-off brought. Memory
with the dirty entry: 313 bytes per reservation (CPython 3.11, tracemalloc over 100,000).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.receipt_digest import ReceiptDigests, term

ReceiptName = tuple[Key, str]  # (counter, idempotency key)
COMPACT_SLACK = 1024  # ended reservations the expiry FIFO may hold beyond twice the live ones
DirtyReceipt = tuple[Key, int, str, Receipt]  # counter, shard, idempotency key, receipt
NONE_UNFLUSHED: Mapping[str, Receipt] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Reservation:
    """An attempt's hold on an idempotency key (node/coordination/fencing.py): the node that
    coordinates it, that node's process token (its attempts' id), and when it lapses here."""

    node: str
    token: str
    until_ms: int


# counter, shard, idempotency key, the reservation (None: it ended, delete it)
DirtyReservation = tuple[Key, int, str, Reservation | None]


class ReceiptBook:
    def __init__(self, window_ms: int, shard_of: Callable[[Key], int]) -> None:
        self.window_ms = window_ms
        self._shard_of = shard_of
        self._held: dict[Key, dict[str, Receipt]] = {}  # counter -> idempotency key -> receipt
        self._shard_keys: dict[int, set[Key]] = {}  # shard -> counters with receipts held
        self._count = 0
        self._expiry: deque[tuple[int, ReceiptName]] = deque()
        self._dirty: dict[ReceiptName, Receipt] = {}  # not yet in the durable replica
        # counter -> its receipts not yet durable here (dirty, or taken by a flush that has
        # not committed yet): every state of the counter this node sends carries them
        self._unflushed: dict[Key, dict[str, Receipt]] = {}
        self._reserved: dict[ReceiptName, Reservation] = {}  # keys reserved, no receipt yet
        self._reserved_expiry: deque[tuple[int, ReceiptName]] = deque()
        # not yet in the durable replica: the reservation to store, or None to delete it
        self._reserved_dirty: dict[ReceiptName, Reservation | None] = {}
        # may be in the durable replica (taken by a flush, or loaded): an end must delete it
        self._reserved_stored: set[ReceiptName] = set()
        self.digests = ReceiptDigests(window_ms)  # what anti-entropy compares
        self._key_shard: dict[Key, int] = {}  # counter -> its shard, for counters held

    def __len__(self) -> int:
        return self._count

    def get(self, key: Key, idem: str, now_ms: int) -> Receipt | None:
        """The receipt of (key, idem), unless it is older than the window."""
        held = self._held.get(key)
        receipt = None if held is None else held.get(idem)
        if receipt is None or receipt.at_ms + self.window_ms < now_ms:
            return None
        return receipt

    def of(self, key: Key, now_ms: int) -> dict[str, Receipt]:
        """Every receipt of a counter within the window: what travels with its state."""
        held = self._held.get(key)
        if not held:
            return {}
        oldest = now_ms - self.window_ms
        return {idem: r for idem, r in held.items() if r.at_ms >= oldest}

    def keys_of_shard(self, shard: int) -> set[Key]:
        """The counters of a shard that hold receipts (some may have no state: claims)."""
        return self._shard_keys.get(shard, set())

    def drop_shard(self, shard: int) -> int:
        """Forget a shard's receipts (not written back to the durable replica); how many."""
        dropped = 0
        self.digests.drop_shard(shard, self._shard_keys.get(shard, ()))
        for key in self._shard_keys.pop(shard, ()):
            self._key_shard.pop(key, None)
            self._unflushed.pop(key, None)
            held = self._held.pop(key, {})
            dropped += len(held)
            for idem in held:
                self._dirty.pop((key, idem), None)
        self._count -= dropped
        return dropped

    def add(self, key: Key, idem: str, receipt: Receipt, durable: bool = False) -> bool:
        """Merge one receipt (the first in receipt order wins); returns whether it changed
        what is held. `durable`: it came from the durable replica, so it need not go back."""
        name = (key, idem)
        by_idem = self._held.get(key)
        if by_idem is None:
            by_idem = self._held[key] = {}
            shard = self._key_shard[key] = self._shard_of(key)
            self._shard_keys.setdefault(shard, set()).add(key)
        else:
            shard = self._key_shard[key]
        held = by_idem.get(idem)
        if held is not None and not receipt < held:
            return False
        if held is None:
            self._count += 1
            if self._reserved.pop(name, None) is not None:  # a receipt answers from now on
                self._ended(name)
        else:
            self.digests.remove(shard, key, held.at_ms, term(key, idem, held))
        self.digests.add(shard, key, receipt.at_ms, term(key, idem, receipt))
        by_idem[idem] = receipt
        self._expiry.append((receipt.at_ms + self.window_ms, name))
        if not durable:
            self._dirty[name] = receipt
            unflushed = self._unflushed.get(key)
            if unflushed is None:
                self._unflushed[key] = {idem: receipt}
            else:
                unflushed[idem] = receipt
        return True

    # -- reservations (node/coordination/fencing.py) -----------------------------------------

    def reserve(
        self,
        key: Key,
        idem: str,
        node: str,
        token: str,
        now_ms: int,
        supersedes: Iterable[str] = (),
    ) -> Receipt | Reservation | None:
        """Reserve or read, atomically: the receipt if one is held; else another attempt's
        live reservation (unless its token is one the caller `supersedes`: that attempt is
        known aborted); else record (node, token) as the holder and return None, a grant."""
        receipt = self.get(key, idem, now_ms)
        if receipt is not None:
            return receipt
        name = (key, idem)
        held = self._reserved.get(name)
        if (
            held is not None
            and held.token != token
            and held.until_ms >= now_ms
            and held.token not in supersedes
        ):
            return held
        if held is None or held.token != token:
            until_ms = now_ms + self.window_ms
            self._reserved[name] = self._reserved_dirty[name] = Reservation(node, token, until_ms)
            lapsing = self._reserved_expiry
            lapsing.append((until_ms, name))
            if len(lapsing) > 2 * len(self._reserved) + COMPACT_SLACK:
                self._compact_reserved()
        return None

    def _compact_reserved(self) -> None:
        """Most reservations end early, when their receipt arrives, and leave their FIFO
        entry behind; rebuild the FIFO from the live ones once it holds twice as many (plus
        some slack), so it stays within a constant factor of them, in amortised O(1)."""
        self._reserved_expiry = deque(
            sorted((held.until_ms, name) for name, held in self._reserved.items())
        )

    def reservation(self, key: Key, idem: str, now_ms: int) -> Reservation | None:
        held = self._reserved.get((key, idem))
        return None if held is None or held.until_ms < now_ms else held

    def release(self, key: Key, idem: str, token: str) -> bool:
        """Drop the reservation of (key, idem) if `token` holds it; whether it did."""
        name = (key, idem)
        held = self._reserved.get(name)
        if held is None or held.token != token:
            return False
        del self._reserved[name]
        self._ended(name)
        return True

    def _ended(self, name: ReceiptName) -> None:
        """A reservation ended: delete it from the durable replica if a flush may have
        written it; one no flush took yet (the usual case) is just not written."""
        if name in self._reserved_stored:
            self._reserved_dirty[name] = None
        else:
            self._reserved_dirty.pop(name, None)

    def restore(self, key: Key, idem: str, held: Reservation, now_ms: int) -> None:
        """A reservation read from the durable replica at start: held again (unless a
        receipt or a later reservation is here already), not written back."""
        name = (key, idem)
        if held.until_ms < now_ms or name in self._reserved or self.get(key, idem, now_ms):
            return
        self._reserved[name] = held
        self._reserved_expiry.append((held.until_ms, name))
        self._reserved_stored.add(name)

    def adopt(self, key: Key, idem: str, held: Reservation, now_ms: int) -> None:
        """A reservation learnt from a hand-off (a PULL reply): held as if granted here,
        and written to the durable replica like a grant."""
        name = (key, idem)
        if name not in self._reserved and not self.get(key, idem, now_ms):
            self.restore(key, idem, held, now_ms)
            if name in self._reserved:
                self._reserved_dirty[name] = held

    def reservations_in(self, shards: set[int], now_ms: int) -> dict[Key, dict[str, Reservation]]:
        """The live reservations of these shards' counters, what a PULL reply carries: a scan
        of the reservations held, which live only until their receipt (few), on a pull only."""
        out: dict[Key, dict[str, Reservation]] = {}
        shard_of = self._shard_of
        for (key, idem), held in self._reserved.items():
            if held.until_ms >= now_ms and shard_of(key) in shards:
                out.setdefault(key, {})[idem] = held
        return out

    def take_dirty_reservations(self) -> list[DirtyReservation]:
        """Reservations changed since the last take, to store (or, None, to delete)."""
        dirty, self._reserved_dirty = self._reserved_dirty, {}
        stored = self._reserved_stored
        for name, held in dirty.items():
            if held is None:
                stored.discard(name)
            else:
                stored.add(name)
        shard_of = self._shard_of
        return [(key, shard_of(key), idem, held) for (key, idem), held in dirty.items()]

    def mark_reservations_dirty(self, entries: Iterable[DirtyReservation]) -> None:
        """Put back reservation changes whose write failed, unless changed again since."""
        dirty = self._reserved_dirty
        for key, _, idem, held in entries:
            dirty.setdefault((key, idem), held)

    def dirty_reservation_count(self) -> int:
        return len(self._reserved_dirty)

    def reservation_count(self) -> int:
        return len(self._reserved)

    def add_many(self, key: Key, incoming: Mapping[str, Receipt]) -> None:
        for idem, receipt in incoming.items():
            self.add(key, idem, receipt)

    def expire(self, now_ms: int) -> int:
        """Drop the receipts older than the window, and lapsed reservations; returns how
        many receipts went."""
        reserved, lapsing = self._reserved, self._reserved_expiry
        while lapsing and lapsing[0][0] < now_ms:
            _, name = lapsing.popleft()
            found = reserved.get(name)
            if found is not None and found.until_ms < now_ms:
                del reserved[name]
                self._reserved_stored.discard(name)  # the durable copy lapses by itself
        expiry, held, dirty = self._expiry, self._held, self._dirty
        dropped = 0
        while expiry and expiry[0][0] < now_ms:
            _, name = expiry.popleft()
            key, idem = name
            by_idem = held.get(key)
            receipt = None if by_idem is None else by_idem.get(idem)
            # A later, smaller receipt of the same name has its own (earlier) FIFO entry.
            if by_idem is not None and receipt is not None:
                if receipt.at_ms + self.window_ms < now_ms:
                    del by_idem[idem]
                    shard = self._key_shard[key]
                    self.digests.remove(shard, key, receipt.at_ms, term(key, idem, receipt))
                    dirty.pop(name, None)
                    self._not_unflushed(key, idem)
                    dropped += 1
                    if not by_idem:
                        del held[key]
                        self._forget_key(key)
        self._count -= dropped
        return dropped

    def _forget_key(self, key: Key) -> None:
        shard = self._key_shard.pop(key)
        keys = self._shard_keys.get(shard)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._shard_keys[shard]

    def summaries(self, shard: int, lo: int, hi: int) -> list[tuple[Key, int]]:
        """Per counter of the shard holding receipts: the sum of its receipts' digest terms
        in buckets [lo, hi) (see receipt_digest.py). O(their buckets), no hashing."""
        key_digest = self.digests.key_digest
        return [(key, key_digest(key, lo, hi)) for key in self._shard_keys.get(shard, ())]

    def in_buckets(self, key: Key, lo: int, hi: int) -> dict[str, Receipt]:
        """A counter's receipts in buckets [lo, hi): what anti-entropy ships."""
        size = self.digests.bucket_ms
        start, end = lo * size, hi * size
        held = self._held.get(key, {})
        return {idem: r for idem, r in held.items() if start <= r.at_ms < end}

    def take_dirty(self) -> list[DirtyReceipt]:
        """The receipts not yet written to the durable replica; they count as written now."""
        dirty, self._dirty = self._dirty, {}
        shard_of = self._shard_of
        return [(key, shard_of(key), idem, receipt) for (key, idem), receipt in dirty.items()]

    def mark_dirty(self, entries: Iterable[DirtyReceipt]) -> None:
        """Put back receipts whose write failed (unless they expired meanwhile)."""
        held, dirty = self._held, self._dirty
        for key, _, idem, receipt in entries:
            by_idem = held.get(key)
            if by_idem is not None and by_idem.get(idem) is receipt:
                dirty.setdefault((key, idem), receipt)

    def dirty_count(self) -> int:
        return len(self._dirty)

    # -- receipts not yet durable: what travels with every state sent ---------------------------

    def unflushed(self, key: Key) -> Mapping[str, Receipt]:
        """The counter's receipts not yet durable here (read-only): one dict lookup, and
        empty for a counter without keyed ops since the last flush (the common case)."""
        return self._unflushed.get(key, NONE_UNFLUSHED)

    def flushed(self, entries: Iterable[DirtyReceipt]) -> None:
        """A flush that took these receipts (take_dirty) committed: they are durable now,
        unless the same name changed again since (then it is dirty, and stays unflushed)."""
        dirty, unflushed = self._dirty, self._unflushed
        for key, _, idem, receipt in entries:
            mine = unflushed.get(key)
            if mine is not None and mine.get(idem) is receipt and (key, idem) not in dirty:
                self._not_unflushed(key, idem)

    def _not_unflushed(self, key: Key, idem: str) -> None:
        mine = self._unflushed.get(key)
        if mine is not None:
            mine.pop(idem, None)
            if not mine:
                del self._unflushed[key]

    def unflushed_count(self) -> int:
        return sum(map(len, self._unflushed.values()))

"""The idempotency receipts and reservations a CounterStore holds beside its counters: the
store's receipt calls, each handed to its ReceiptBook (receipt_book.py), whose per-shard
digests (receipt_digest.py) anti-entropy compares. Apart from store.py so that each module
keeps to one concern."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.receipt_book import DirtyReceipt, DirtyReservation, ReceiptBook, Reservation


class StoreReceipts:
    """The receipt half of CounterStore (its base class)."""

    def __init__(self, receipt_window_ms: int, shard_of: Callable[[Key], int]) -> None:
        self._receipts = ReceiptBook(receipt_window_ms, shard_of)  # idempotency receipts

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

    def receipts_between(self, key: Key, lo: int, hi: int) -> dict[str, Receipt]:
        """A counter's receipts stamped in buckets [lo, hi)."""
        return self._receipts.in_buckets(key, lo, hi)

"""Idempotency receipts in memory: one entry per (counter, idempotency key), expiring in order.

Each receipt is held once, in a flat map (counter, idempotency key) -> Receipt, so looking one
up, adding one, or marking one for the durable replica costs O(1) however many the counter or
the node holds; nothing ever copies a counter's whole set. Receipts also enter a FIFO of
(expiry ms, name); `expire(now_ms)` pops from its head while the head has expired, so each
receipt is dropped once, in amortised O(1), and the total held is bounded by the receipts
applied or learned within the window (plus the clock skew between the nodes that stamped
them: a receipt that arrives with an older stamp than the tail's waits behind it).

A receipt older than the window is never answered (`get` checks its age), whatever the FIFO
holds, so expiry only bounds memory and never decides correctness.

Memory: about 340 bytes per receipt held, plus its idempotency key string (83 bytes for
a 38-character key): tracemalloc over 100,000 receipts of one counter, CPython 3.12, counting
the map entry and its name tuple, the Receipt and its ints, and the FIFO entry; a receipt
not yet flushed to the durable replica also has a dirty-map entry until the next flush. The
actor, fingerprint and counter key are shared by all the receipts of one request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from crdt.receipts import Receipt
from node.base.keys import Key

ReceiptName = tuple[Key, str]  # (counter, idempotency key)
DirtyReceipt = tuple[Key, int, str, Receipt]  # counter, shard, idempotency key, receipt


class ReceiptBook:
    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._held: dict[ReceiptName, Receipt] = {}
        self._expiry: deque[tuple[int, ReceiptName]] = deque()
        self._dirty: dict[ReceiptName, Receipt] = {}  # not yet in the durable replica

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: Key, idem: str, now_ms: int) -> Receipt | None:
        """The receipt of (key, idem), unless it is older than the window."""
        receipt = self._held.get((key, idem))
        if receipt is None or receipt.at_ms + self.window_ms < now_ms:
            return None
        return receipt

    def add(self, key: Key, idem: str, receipt: Receipt, durable: bool = False) -> bool:
        """Merge one receipt (the first in receipt order wins); returns whether it changed
        what is held. `durable`: it came from the durable replica, so it need not go back."""
        name = (key, idem)
        held = self._held.get(name)
        if held is not None and not receipt < held:
            return False
        self._held[name] = receipt
        self._expiry.append((receipt.at_ms + self.window_ms, name))
        if not durable:
            self._dirty[name] = receipt
        return True

    def add_many(self, key: Key, incoming: Mapping[str, Receipt]) -> None:
        for idem, receipt in incoming.items():
            self.add(key, idem, receipt)

    def expire(self, now_ms: int) -> int:
        """Drop the receipts older than the window; returns how many went."""
        expiry, held, dirty = self._expiry, self._held, self._dirty
        dropped = 0
        while expiry and expiry[0][0] < now_ms:
            _, name = expiry.popleft()
            receipt = held.get(name)
            # A later, smaller receipt of the same name has its own (earlier) FIFO entry.
            if receipt is not None and receipt.at_ms + self.window_ms < now_ms:
                del held[name]
                dirty.pop(name, None)
                dropped += 1
        return dropped

    def take_dirty(self, shard_of: Callable[[Key], int]) -> list[DirtyReceipt]:
        """The receipts not yet written to the durable replica; they count as written now."""
        dirty, self._dirty = self._dirty, {}
        return [(key, shard_of(key), idem, receipt) for (key, idem), receipt in dirty.items()]

    def mark_dirty(self, entries: Iterable[DirtyReceipt]) -> None:
        """Put back receipts whose write failed (unless they expired meanwhile)."""
        held, dirty = self._held, self._dirty
        for key, _, idem, receipt in entries:
            name = (key, idem)
            if held.get(name) is receipt:
                dirty.setdefault(name, receipt)

    def dirty_count(self) -> int:
        return len(self._dirty)

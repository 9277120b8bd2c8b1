"""handover.pushed_all: a lost shard is dropped only if what it holds now is what was pushed,
its counters and their idempotency receipts alike (node/cluster/handover.py)."""

from __future__ import annotations

from crdt.receipts import Receipt
from node.cluster.handover import pushed_all
from node.storage.store import CounterStore

NOW_MS = 1_000_000
WINDOW_MS = 10_000
A = ("t", "ns", "a")
B = ("t", "ns", "b")


def _store_with_a_counter_and_its_receipt() -> CounterStore:
    store = CounterStore(lambda key: 0, receipt_window_ms=WINDOW_MS)
    store.increment(A, "n4:1", 5)
    store.add_receipt(A, "op-1", Receipt(NOW_MS - 100, "n4:1", "f", 5))
    return store


def test_an_unchanged_shard_counts_as_pushed():
    """The shard is dropped once its owners acknowledged a copy of all it holds."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    assert pushed_all(store.shard_carried(0, NOW_MS), pushed)


def test_an_increment_after_the_copy_keeps_the_shard():
    """A hint added to a counter the copy held must not be dropped unsent."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    store.increment(A, "n4:1", 1)
    assert not pushed_all(store.shard_carried(0, NOW_MS), pushed)


def test_a_counter_created_after_the_copy_keeps_the_shard():
    """A hint that created a counter the copy lacked must not be dropped unsent."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    store.increment(B, "n4:1", 3)
    assert not pushed_all(store.shard_carried(0, NOW_MS), pushed)


def test_a_receipt_added_after_the_copy_keeps_the_shard():
    """A keyed op's receipt the owners lack must not be dropped: without it a retry of the
    op would apply twice there."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    store.add_receipt(A, "op-2", Receipt(NOW_MS - 50, "n4:1", "g", 6))
    assert not pushed_all(store.shard_carried(0, NOW_MS), pushed)


def test_a_receipt_of_a_counter_without_state_added_after_the_copy_keeps_the_shard():
    """A batch claim holds a receipt and no state: it must reach the owners too."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    store.add_receipt(B, "claim", Receipt(NOW_MS - 50, "n4:1", "h", 0))
    assert not pushed_all(store.shard_carried(0, NOW_MS), pushed)


def test_a_receipt_that_expired_after_the_copy_does_not_keep_the_shard():
    """Receipts leaving the window were pushed already: nothing is missing at the owners."""
    store = _store_with_a_counter_and_its_receipt()
    pushed = store.shard_carried(0, NOW_MS)
    assert pushed_all(store.shard_carried(0, NOW_MS + WINDOW_MS), pushed)

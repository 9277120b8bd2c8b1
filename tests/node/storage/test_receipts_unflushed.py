"""The receipt book's index of receipts not yet durable (issue 11): what every state of a
counter that a node sends must carry. A receipt is unflushed from the moment it is added
until the flush that took it commits; a flush that fails leaves it unflushed, and receipts
loaded from the durable replica never are."""

from __future__ import annotations

from crdt.receipts import Receipt
from node.storage.receipt_book import ReceiptBook

WINDOW = 60_000
KEY = ("t", "ns", "c")
OTHER = ("t", "ns", "d")


def _book() -> ReceiptBook:
    return ReceiptBook(WINDOW, lambda key: 0)


def test_a_receipt_is_unflushed_until_the_flush_that_took_it_commits():
    book = _book()
    assert dict(book.unflushed(KEY)) == {}
    first = Receipt(1_000, "n1:1", "fp", 5)
    book.add(KEY, "a", first)
    assert dict(book.unflushed(KEY)) == {"a": first}
    assert dict(book.unflushed(OTHER)) == {}
    taken = book.take_dirty()
    assert dict(book.unflushed(KEY)) == {"a": first}  # being written: not durable yet
    book.mark_dirty(taken)  # the write failed
    assert dict(book.unflushed(KEY)) == {"a": first}
    taken = book.take_dirty()
    book.flushed(taken)
    assert dict(book.unflushed(KEY)) == {}
    assert book.unflushed_count() == 0


def test_a_receipt_replaced_while_its_flush_ran_stays_unflushed():
    book = _book()
    book.add(KEY, "a", Receipt(2_000, "n1:1", "fp", 5))
    taken = book.take_dirty()
    earlier = Receipt(1_000, "n2:1", "fp", 5)  # the first in receipt order wins
    book.add(KEY, "a", earlier)
    book.flushed(taken)
    assert dict(book.unflushed(KEY)) == {"a": earlier}


def test_loaded_receipts_are_durable_and_expired_or_dropped_ones_leave_the_index():
    book = _book()
    book.add(KEY, "loaded", Receipt(1_000, "n1:1", "fp", 5), durable=True)
    book.add(KEY, "old", Receipt(1_000, "n1:1", "fp", 6))
    book.add(OTHER, "new", Receipt(50_000, "n1:1", "fp", 7))
    assert set(book.unflushed(KEY)) == {"old"}
    book.expire(1_000 + WINDOW + 1)
    assert dict(book.unflushed(KEY)) == {}
    assert set(book.unflushed(OTHER)) == {"new"}
    book.drop_shard(0)
    assert dict(book.unflushed(OTHER)) == {}
    assert book.unflushed_count() == 0

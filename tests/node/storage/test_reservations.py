"""Reservations of idempotency keys (node/coordination/fencing.py) in the receipt book:
reserve-or-read is one atomic answer, a receipt outranks any reservation, a reservation
lapses with the window, and only its own token releases it."""

from __future__ import annotations

from crdt.receipts import Receipt
from node.storage.receipt_book import ReceiptBook, Reservation

KEY = ("t", "ns", "c")
WINDOW = 1_000


def _book() -> ReceiptBook:
    return ReceiptBook(WINDOW, lambda key: 3)


def test_the_first_attempt_is_granted_and_a_second_meets_its_reservation():
    book = _book()
    assert book.reserve(KEY, "a", "n1", "t1", 100) is None
    assert book.reserve(KEY, "a", "n1", "t1", 150) is None  # the same attempt again
    assert book.reserve(KEY, "a", "n2", "t2", 200) == Reservation("n1", "t1", 100 + WINDOW)
    assert book.reservation(KEY, "a", 200) == Reservation("n1", "t1", 100 + WINDOW)
    assert book.reserve(KEY, "b", "n2", "t2", 200) is None  # another key is free


def test_a_receipt_answers_instead_of_any_reservation_and_ends_it():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    receipt = Receipt(120, "n1:1", "fp", 5)
    book.add(KEY, "a", receipt)
    assert book.reserve(KEY, "a", "n2", "t2", 200) == receipt
    assert book.reservation(KEY, "a", 200) is None and book.reservation_count() == 0


def test_only_a_superseding_attempt_or_the_window_takes_a_held_key():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    assert book.reserve(KEY, "a", "n2", "t2", 200, supersedes=["t9"]) is not None
    assert book.reserve(KEY, "a", "n2", "t2", 200, supersedes=["t1"]) is None
    assert book.reservation(KEY, "a", 200) == Reservation("n2", "t2", 200 + WINDOW)
    # lapsed: anyone may take it, and expire() forgets it
    assert book.reserve(KEY, "a", "n3", "t3", 201 + WINDOW) is None
    assert book.expire(202 + 2 * WINDOW) == 0 and book.reservation_count() == 0


def test_release_drops_a_reservation_only_for_its_own_token():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    assert not book.release(KEY, "a", "t2")
    assert book.reservation(KEY, "a", 100) is not None
    assert book.release(KEY, "a", "t1")
    assert book.reservation(KEY, "a", 100) is None
    assert not book.release(KEY, "a", "t1")


def test_reservations_ended_by_their_receipts_do_not_pile_up_in_the_expiry_fifo():
    book = _book()
    for i in range(10_000):
        book.reserve(KEY, f"k{i}", "n1", "t1", 100)
        book.add(KEY, f"k{i}", Receipt(100, "n1:1", "fp", i))  # the usual end of one
    assert book.reservation_count() == 0
    assert len(book._reserved_expiry) <= 1025

"""What the write-behind takes of reservations (issue 11): a grant is marked for the durable
replica when taken, a delete when it is released or its receipt arrives, a failed write puts
the changes back, and a grant read back at start is held again without being rewritten. And
a Redis flush never splits a counter's state from its receipts over two script calls."""

from __future__ import annotations

import json

from crdt import PNCounter
from crdt.receipts import Receipt
from node.storage.receipt_book import ReceiptBook, Reservation
from node.storage.redis_flush import ENTRIES_PER_CALL, flush_calls

KEY = ("t", "ns", "c")
WINDOW = 1_000


def _book() -> ReceiptBook:
    return ReceiptBook(WINDOW, lambda key: 3)


def test_a_grant_is_written_and_its_end_deletes_it():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    book.reserve(KEY, "b", "n1", "t1", 100)
    assert sorted(book.take_dirty_reservations(), key=lambda e: e[2]) == [
        (KEY, 3, "a", Reservation("n1", "t1", 100 + WINDOW)),
        (KEY, 3, "b", Reservation("n1", "t1", 100 + WINDOW)),
    ]
    book.reserve(KEY, "a", "n1", "t1", 150)  # the same attempt again: nothing new to write
    assert book.take_dirty_reservations() == []
    book.release(KEY, "a", "t1")
    book.add(KEY, "b", Receipt(120, "n1:1", "fp", 5))
    assert sorted(book.take_dirty_reservations(), key=lambda e: e[2]) == [
        (KEY, 3, "a", None),
        (KEY, 3, "b", None),
    ]


def test_a_grant_that_ends_before_any_flush_took_it_is_never_written():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    book.reserve(KEY, "b", "n1", "t1", 100)
    book.add(KEY, "a", Receipt(120, "n1:1", "fp", 5))  # the usual end, within a round trip
    book.release(KEY, "b", "t1")
    assert book.take_dirty_reservations() == []


def test_a_failed_write_puts_back_only_what_did_not_change_since():
    book = _book()
    book.reserve(KEY, "a", "n1", "t1", 100)
    taken = book.take_dirty_reservations()
    book.release(KEY, "a", "t1")  # changed after the take: the delete must win
    book.mark_reservations_dirty(taken)
    assert book.take_dirty_reservations() == [(KEY, 3, "a", None)]


def test_a_grant_read_back_at_start_is_held_and_not_rewritten():
    book = _book()
    held = Reservation("n1", "old-token", 100 + WINDOW)
    book.restore(KEY, "a", held, 200)
    book.restore(KEY, "lapsed", Reservation("n1", "old", 150), 200)
    assert book.reserve(KEY, "a", "n2", "t2", 300) == held
    assert book.reservation(KEY, "lapsed", 200) is None
    assert book.take_dirty_reservations() == []
    assert book.release(KEY, "a", "old-token")  # its holder answers "void": deleted
    assert book.take_dirty_reservations() == [(KEY, 3, "a", None)]


def test_a_redis_flush_keeps_each_counter_with_all_its_receipts_in_one_call():
    many = ENTRIES_PER_CALL * 2 + 7
    big = ("t", "ns", "big")
    state = PNCounter.empty().increment("n1:1", many)
    entries = [(big, 5, state)] + [
        (("t", "ns", f"c{i}"), 5, PNCounter.empty().increment("n1:1", 1)) for i in range(300)
    ]
    receipts = [(big, 5, f"k{i}", Receipt(100, "n1:1", "fp", i)) for i in range(many)] + [
        (("t", "ns", f"c{i}"), 5, "k", Receipt(100, "n1:1", "fp", 1)) for i in range(300)
    ]
    held = [(("t", "ns", f"c{i}"), 5, "r", None) for i in range(600)]
    calls = flush_calls("n1", entries, receipts, held, WINDOW, 100)[5]
    assert len(calls) > 2
    for call in calls:
        keys, args = call.script()
        names = {k.removeprefix("ctr:{5}:") for k in keys[4:] if k.startswith("ctr:")}
        records = [json.loads(record) for record in call.receipts[1::2]]
        assert all(record[0] in names for record in records)  # each with its counter's state
        assert args[1] == len(names)
    assert sum(call.script()[1][2] for call in calls) == len(receipts)
    assert sum(call.script()[1][3] for call in calls) == len(held)

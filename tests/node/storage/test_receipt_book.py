"""The in-memory receipts: one entry per (counter, idempotency key), first in order wins,
expiry in time order, per-receipt dirty tracking for the durable replica."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt import receipts as crdt_receipts
from crdt.receipts import Receipt
from node.storage.receipt_book import ReceiptBook
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")
OTHER = ("t", "ns", "d")
WINDOW = 1_000


def _receipt(at_ms: int, value: int = 1, actor: str = "n1:1") -> Receipt:
    return Receipt(at_ms, actor, "fp", value)


def _shard(key: tuple[str, str, str]) -> int:
    return 7 if key == KEY else 9


def test_a_receipt_is_answered_within_the_window_and_not_after():
    book = ReceiptBook(WINDOW, _shard)
    book.add(KEY, "a", _receipt(100))
    assert book.get(KEY, "a", 100 + WINDOW) == _receipt(100)
    assert book.get(KEY, "a", 101 + WINDOW) is None  # even before expire() ran
    assert book.get(OTHER, "a", 100) is None


def test_the_first_receipt_in_order_wins_whatever_the_order_of_arrival():
    book = ReceiptBook(WINDOW, _shard)
    assert book.add(KEY, "a", _receipt(200, 5))
    assert book.add(KEY, "a", _receipt(100, 9))  # earlier: replaces
    assert not book.add(KEY, "a", _receipt(300, 1))  # later: ignored
    assert book.get(KEY, "a", 300) == _receipt(100, 9)


def test_expire_drops_exactly_the_receipts_past_the_window():
    book = ReceiptBook(WINDOW, _shard)
    for at in range(0, 100):
        book.add(KEY, f"k{at}", _receipt(at))
    assert book.expire(50 + WINDOW) == 50  # at_ms 0..49 are older than the window
    assert len(book) == 50
    assert book.get(KEY, "k49", 49 + WINDOW) is None
    assert book.get(KEY, "k50", 50 + WINDOW) == _receipt(50)
    assert book.expire(50 + WINDOW) == 0  # nothing more to do: the head is live


def test_a_replaced_receipt_expires_once_with_its_replacement():
    book = ReceiptBook(WINDOW, _shard)
    book.add(KEY, "a", _receipt(500))
    book.add(KEY, "a", _receipt(100))  # two FIFO entries, one receipt
    assert book.get(KEY, "a", 101 + WINDOW) is None
    assert book.expire(501 + WINDOW) == 1
    assert len(book) == 0 and book.expire(10_000) == 0


def test_receipts_out_of_time_order_never_answer_after_the_window():
    book = ReceiptBook(WINDOW, _shard)
    book.add(KEY, "late", _receipt(900))
    book.add(KEY, "early", _receipt(100))  # arrives after a later one: waits behind it
    assert book.expire(101 + WINDOW) == 0
    assert book.get(KEY, "early", 101 + WINDOW) is None  # but is never answered
    assert book.expire(901 + WINDOW) == 2


def test_dirty_receipts_are_taken_one_by_one_and_put_back_on_failure():
    book = ReceiptBook(WINDOW, _shard)
    book.add(KEY, "a", _receipt(1))
    book.add(OTHER, "b", _receipt(2))
    book.add(KEY, "c", _receipt(3), durable=True)  # loaded from the durable replica
    taken = book.take_dirty()
    assert sorted(taken) == [(KEY, 7, "a", _receipt(1)), (OTHER, 9, "b", _receipt(2))]
    assert book.take_dirty() == []
    book.add(KEY, "d", _receipt(4))
    assert [idem for _, _, idem, _ in book.take_dirty()] == ["d"]  # not a, b, c again
    book.mark_dirty(taken)
    assert sorted(idem for _, _, idem, _ in book.take_dirty()) == ["a", "b"]


def test_an_expired_receipt_is_neither_written_nor_put_back():
    book = ReceiptBook(WINDOW, _shard)
    book.add(KEY, "a", _receipt(1))
    taken = book.take_dirty()
    book.add(KEY, "b", _receipt(2))
    book.expire(3 + WINDOW)
    book.mark_dirty(taken)
    assert book.take_dirty() == []


names = st.sampled_from(["a", "b", "c"])
arrivals = st.lists(st.tuples(names, st.integers(0, 3_000), st.integers(0, 3)), max_size=30)


@given(arrivals, st.integers(0, 5_000))
def test_the_book_agrees_with_a_merged_and_pruned_map(arrived, now_ms):
    """Model: crdt.receipts merge then prune; the book must answer the same."""
    book = ReceiptBook(WINDOW, _shard)
    model: dict[str, Receipt] = {}
    for idem, at_ms, value in arrived:
        receipt = _receipt(at_ms, value)
        book.add(KEY, idem, receipt)
        model = crdt_receipts.merge(model, {idem: receipt})
    book.expire(now_ms)
    kept = crdt_receipts.prune(model, now_ms, WINDOW)
    assert {idem: book.get(KEY, idem, now_ms) for idem in "abc"} == {
        idem: kept.get(idem) for idem in "abc"
    }
    assert len(book) <= len(model)


def test_the_store_holds_receipts_per_receipt_and_counts_them():
    store = CounterStore(_shard, receipt_window_ms=WINDOW)
    store.add_receipts(KEY, {"a": _receipt(10), "b": _receipt(20)})
    store.add_receipt(KEY, "c", _receipt(30))
    store.load_receipts([(OTHER, 9, "d", _receipt(40))])
    assert store.receipt_count() == 4
    assert store.receipt(OTHER, "d", 40) == _receipt(40)
    assert {idem for _, _, idem, _ in store.take_dirty_receipts()} == {"a", "b", "c"}
    assert store.expire_receipts(25 + WINDOW) == 2
    assert store.receipt_count() == 2

"""Receipts found by counter and by shard: what travels with a shard's state and leaves
with it."""

from __future__ import annotations

from crdt.receipts import Receipt
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")
CLAIM = ("t", "#idempotency", "batch-1")  # receipts only, no state
ELSEWHERE = ("t", "ns", "d")
WINDOW = 1_000


def _shard(key: tuple[str, str, str]) -> int:
    return 9 if key == ELSEWHERE else 7


def _receipt(at_ms: int, value: int = 1) -> Receipt:
    return Receipt(at_ms, "n1:1", "fp", value)


def _store() -> CounterStore:
    store = CounterStore(_shard, receipt_window_ms=WINDOW)
    store.increment(KEY, "n1:1", 5)
    store.increment(ELSEWHERE, "n1:1", 2)
    store.add_receipts(KEY, {"a": _receipt(10), "b": _receipt(500)})
    store.add_receipt(CLAIM, "batch-1", _receipt(20))
    store.add_receipt(ELSEWHERE, "z", _receipt(30))
    return store


def test_a_shard_travels_with_its_receipts_within_the_window_and_its_claims():
    store = _store()
    carried = {key: (state.value(), found) for key, state, found in store.shard_carried(7, 900)}
    assert carried == {
        KEY: (5, {"a": _receipt(10), "b": _receipt(500)}),
        CLAIM: (0, {"batch-1": _receipt(20)}),
    }
    # past the window of "a" (and of the claim), only "b" goes
    later = {key: found for key, _, found in store.shard_carried(7, 1_100)}
    assert later == {KEY: {"b": _receipt(500)}, CLAIM: {}}


def test_merging_carried_entries_adds_states_and_receipts():
    source, target = _store(), CounterStore(_shard, receipt_window_ms=WINDOW)
    target.merge_carried(source.shard_carried(7, 900))
    assert target.get(KEY) == source.get(KEY)
    assert target.receipt(KEY, "a", 900) == _receipt(10)
    assert target.receipt(CLAIM, "batch-1", 900) == _receipt(20)
    assert target.get(CLAIM) is None  # an empty state stores nothing


def test_dropping_a_shard_drops_its_receipts_and_no_other():
    store = _store()
    store.take_dirty_receipts()
    store.add_receipt(KEY, "c", _receipt(40))  # not yet written to the durable replica
    store.drop_shard(7)
    assert store.get(KEY) is None
    assert store.receipt(KEY, "a", 100) is None and store.receipt(CLAIM, "batch-1", 100) is None
    assert store.receipts_of(KEY, 100) == {}
    assert store.receipt_count() == 1
    assert store.receipt(ELSEWHERE, "z", 100) == _receipt(30)
    assert store.take_dirty_receipts() == []  # a dropped receipt is not written back
    assert store.shard_carried(7, 100) == []


def test_expiry_forgets_a_counter_whose_receipts_all_went():
    store = _store()
    store.expire_receipts(600 + WINDOW)
    assert [key for key, _, found in store.shard_carried(7, 600 + WINDOW) if found] == []
    assert [key for key, _, _ in store.shard_carried(7, 600 + WINDOW)] == [KEY]  # state stays

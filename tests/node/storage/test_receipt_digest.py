"""Receipt digests: order-independent, O(1) to keep, and a range sum equal to a recount."""

from __future__ import annotations

import random

from crdt.receipts import Receipt
from node.storage.receipt_digest import MASK64, ReceiptDigests, term
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")


def _receipt(at_ms: int, value: int = 1) -> Receipt:
    return Receipt(at_ms, "n1:1", "fp", value)


def test_covered_leaves_out_receipts_in_flight_and_about_to_expire():
    digests = ReceiptDigests(window_ms=86_400_000)
    assert (digests.bucket_ms, digests.settle_ms) == (16_000, 5_000)
    lo, hi = digests.covered(now_ms=100_000_000)
    assert hi * 16_000 <= 100_000_000 - 5_000  # every covered bucket ended 5 s ago
    assert lo * 16_000 >= 100_000_000 - 86_400_000 + 5_000  # and expires 5 s from now at least
    assert hi * 16_000 > 100_000_000 - 5_000 - 16_000  # and no more is left out than that
    assert digests.comparable(lo, hi, 100_000_000)
    assert not digests.comparable(lo, hi + 100_000, 100_000_000)  # longer than the window
    assert digests.comparable(lo, hi, 100_004_000)  # a peer's clock 4 s behind ours
    assert not digests.comparable(lo, hi, 100_030_000)  # 30 s: it names what we may expire


def test_a_range_digest_equals_a_recount_however_ranges_and_receipts_move():
    rng = random.Random(7)
    digests = ReceiptDigests(window_ms=16_000)
    held: list[tuple[str, int, int]] = []  # (counter name, at_ms, term)
    for step in range(2_000):
        if held and rng.random() < 0.3:
            name, at_ms, value = held.pop(rng.randrange(len(held)))
            digests.remove(5, ("t", "ns", name), at_ms, value)
        else:
            name, at_ms, value = rng.choice("abc"), rng.randrange(0, 60_000), rng.getrandbits(64)
            held.append((name, at_ms, value))
            digests.add(5, ("t", "ns", name), at_ms, value)
        lo = rng.randrange(0, 240) if step % 7 else rng.randrange(0, 5)
        hi = lo + rng.randrange(0, 160)
        size = digests.bucket_ms
        expected = sum(v for _, at, v in held if lo <= at // size < hi) & MASK64
        assert digests.digest(5, lo, hi) == expected
        of_a = sum(v for n, at, v in held if n == "a" and lo <= at // size < hi) & MASK64
        assert digests.key_digest(("t", "ns", "a"), lo, hi) == of_a


def test_equal_receipt_sets_give_equal_digests_in_any_order_and_a_missing_one_differs():
    receipts = {f"k{i}": _receipt(10_000 + i * 300, i) for i in range(20)}
    one = CounterStore(lambda key: 3, receipt_window_ms=16_000)
    two = CounterStore(lambda key: 3, receipt_window_ms=16_000)
    one.add_receipts(KEY, receipts)
    items = list(receipts.items())
    random.Random(1).shuffle(items)
    for idem, receipt in items:
        two.add_receipt(KEY, idem, receipt)
    two.add_receipt(KEY, "k3", _receipt(12_000))  # a later receipt of k3 loses: no change
    _, lo, hi = one.receipt_range(20_000)
    assert one.receipt_digest(3, lo, hi) != 0
    assert one.receipt_digest(3, lo, hi) == two.receipt_digest(3, lo, hi)
    three = CounterStore(lambda key: 3, receipt_window_ms=16_000)
    three.add_receipts(KEY, {k: r for k, r in receipts.items() if k != "k4"})
    assert three.receipt_digest(3, lo, hi) != one.receipt_digest(3, lo, hi)
    assert three.receipt_summaries(3, lo, hi) != one.receipt_summaries(3, lo, hi)


def test_expiry_and_dropping_a_shard_take_receipts_out_of_the_digest():
    store = CounterStore(lambda key: 3, receipt_window_ms=16_000)
    store.add_receipt(KEY, "old", _receipt(3_000))
    store.add_receipt(KEY, "new", _receipt(9_000))
    _, lo, hi = store.receipt_range(14_000)
    both = store.receipt_digest(3, lo, hi)
    store.expire_receipts(19_500)  # "old" expired at 19 000
    assert both != term(KEY, "new", _receipt(9_000))
    assert store.receipt_digest(3, lo, hi) == term(KEY, "new", _receipt(9_000))
    store.drop_shard(3)
    assert store.receipt_digest(3, lo, hi) == 0 and store.receipt_shards() == []

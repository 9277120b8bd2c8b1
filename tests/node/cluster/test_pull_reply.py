"""A PULL reply: each counter with its receipts, and never more receipts than a frame holds;
paged, every receipt, however many a shard holds."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from crdt.receipts import Receipt
from node.cluster.handoff import pull_page, pull_reply
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")
CLAIM = ("t", "#idempotency", "batch-1")
WINDOW = 10_000
ONE_RECEIPT = 2 + 4 + 2 + 32  # idempotency key, actor, fingerprint, overhead


def _store() -> CounterStore:
    store = CounterStore(lambda key: 3, receipt_window_ms=WINDOW)
    store.increment(KEY, "n1:1", 5)
    store.add_receipts(KEY, {f"k{i}": Receipt(100 + i, "n1:1", "fp", i) for i in range(5)})
    store.add_receipt(CLAIM, "k9", Receipt(50, "n1:1", "fp", 0))
    return store


def test_a_pull_reply_carries_every_receipt_that_fits():
    reply = {key: found for key, _, found in pull_reply(_store(), [3], 1_000)}
    assert sorted(reply[KEY]) == [f"k{i}" for i in range(5)] and list(reply[CLAIM]) == ["k9"]


def test_a_pull_reply_over_budget_keeps_the_newest_receipts(caplog):
    with caplog.at_level(logging.WARNING, "counters.handoff"):
        reply = pull_reply(_store(), [3], 1_000, budget=3 * ONE_RECEIPT)
    kept = {key: sorted(found) for key, _, found in reply}
    assert kept == {KEY: ["k2", "k3", "k4"], CLAIM: []}
    assert {key for key, state, _ in reply if state.value() == 5} == {KEY}  # states all go
    assert "leaves out 3 old receipts" in caplog.text


def test_pages_of_a_pull_carry_every_receipt_once_and_every_state_on_the_first():
    """An older puller gets one reply, its old receipts cut to fit a frame (above): a retry
    of one of those on the new replicas could apply again. Pages carry them all."""
    store = _store()
    pages, after = [], None
    while True:
        entries, after = pull_page(store, [3], 1_000, after, budget=2 * ONE_RECEIPT)
        pages.append(entries)
        if after is None:
            break
    assert len(pages) == 3  # 6 receipts, 2 a page
    assert {key: state.value() for key, state, _ in pages[0]} == {KEY: 5, CLAIM: 0}
    assert all(state.value() == 0 for page in pages[1:] for _, state, _ in page)
    got = [(key, idem) for page in pages for key, _, found in page for idem in found]
    assert sorted(got) == sorted([(KEY, f"k{i}") for i in range(5)] + [(CLAIM, "k9")]) and len(
        got
    ) == len(set(got))


@given(st.integers(1, 8 * ONE_RECEIPT), st.integers(0, 30))
def test_pages_end_and_miss_nothing_whatever_the_budget(budget: int, count: int):
    store = CounterStore(lambda key: 3, receipt_window_ms=WINDOW)
    for i in range(count):
        store.add_receipt(("t", "ns", f"c{i % 7}"), f"k{i}", Receipt(100 + i, "n1:1", "fp", i))
    got, after, pages = [], None, 0
    while pages == 0 or after is not None:
        entries, after = pull_page(store, [3], 1_000, after, budget=budget)
        got += [(key, idem) for key, _, found in entries for idem in found]
        pages += 1
        assert pages <= count + 1  # each page moves on
    assert sorted(got) == sorted((("t", "ns", f"c{i % 7}"), f"k{i}") for i in range(count))

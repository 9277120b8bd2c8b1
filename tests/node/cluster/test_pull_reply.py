"""A PULL reply: each counter with its receipts, and never more receipts than a frame holds."""

from __future__ import annotations

import logging

from crdt.receipts import Receipt
from node.cluster.handoff import pull_reply
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

"""Anti-entropy repair frames carry each pushed counter's receipts, bounded per frame."""

from __future__ import annotations

from crdt import PNCounter
from crdt.receipts import Receipt
from node.cluster.anti_entropy import push_frames
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")
ELSEWHERE = ("t", "ns", "d")
WINDOW = 1_000


def _shard(key: tuple[str, str, str]) -> int:
    return 9 if key == ELSEWHERE else 7


def _receipt(at_ms: int) -> Receipt:
    return Receipt(at_ms, "n1:1", "fp", 1)


def test_push_frames_bound_the_receipts_a_frame_carries():
    store = CounterStore(_shard, receipt_window_ms=WINDOW)
    store.add_receipts(KEY, {f"k{i}": _receipt(100 + i) for i in range(7)})
    store.add_receipt(ELSEWHERE, "z", _receipt(30))
    state = PNCounter.empty().increment("n1:1", 1)
    entries = [(k, state, store.receipts_of(k, 200)) for k in (KEY, ELSEWHERE)]
    frames = list(push_frames(entries, receipts=3))
    assert [[len(found) for _, _, found in frame] for frame in frames] == [[3], [3], [1, 1]]
    held: dict[str, Receipt] = {}
    for frame in frames:
        for key, sent, found in frame:
            assert sent == state  # every part of a counter goes with its state
            if key == KEY:
                held |= found
    assert held == store.receipts_of(KEY, 200)
    by_counters = list(push_frames(entries, counters=1))
    assert [[key for key, _, _ in frame] for frame in by_counters] == [[KEY], [ELSEWHERE]]

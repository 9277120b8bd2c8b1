"""Anti-entropy defers a differing shard that changed lately here, never for long.

Under load every shard's replicas differ by the writes in flight, and comparing them all at
every exchange shipped every counter in flight. A shard that changed here within the last
write-behind intervals is compared with a peer at one exchange in HOT_EVERY + 1; one that
stands still is compared at once; each peer keeps its own turn.
"""

from __future__ import annotations

from crdt import PNCounter
from node.base.keys import Key
from node.cluster.anti_entropy import HOT_EVERY, HOT_PER_EXCHANGE, AntiEntropy, Asked
from node.storage.store import CounterStore

HOT: Key = ("t", "ns", "hot")
STILL: Key = ("t", "ns", "still")
SHARDS = {HOT: 1, STILL: 2}


def _store() -> CounterStore:
    store = CounterStore(SHARDS.__getitem__)
    for key in (HOT, STILL):
        store.merge(key, PNCounter.empty().increment("n2:1", 5))
    store.take_dirty()
    store.take_dirty()  # two flushes since: neither shard changed lately
    return store


def _asked() -> Asked:
    """A peer's digests that differ from ours for both shards."""
    return Asked(states=[(1, 12345), (2, 67890)], receipts=None)


def _compared(ae: AntiEntropy, peer: str) -> list[int]:
    fields = ae.fingerprints(_asked(), [1, 2], recovered=True, peer=peer)
    return [shard for shard, _ in fields["shares"]]


def _busy(shards: int) -> tuple[AntiEntropy, Asked]:
    """Shards 0..shards-1, one counter each written here (all changed lately), and a
    peer's digests that differ for all of them."""
    keys = {("t", "ns", f"c{shard}"): shard for shard in range(shards)}
    store = CounterStore(keys.__getitem__)
    for key in keys:
        store.increment(key, "n1:1", 1)
    asked = Asked(states=[(shard, 1) for shard in range(shards)], receipts=None)
    return AntiEntropy(store, shards_per_round=64), asked


def test_a_shard_that_stands_still_is_compared_at_every_exchange():
    ae = AntiEntropy(_store(), shards_per_round=64)
    for _ in range(HOT_EVERY + 2):
        assert _compared(ae, "n2") == [1, 2]
    assert ae.deferred_shards == 0


def test_a_shard_changed_lately_is_compared_once_in_hot_every_plus_one_exchanges_per_peer():
    store = _store()
    ae = AntiEntropy(store, shards_per_round=64)
    store.increment(HOT, "n1:1", 1)  # a write here: shard 1 changed lately
    seen = [_compared(ae, "n2") for _ in range(2 * (HOT_EVERY + 1))]
    assert seen == ([[1, 2]] + [[2]] * HOT_EVERY) * 2
    assert ae.deferred_shards == 2 * HOT_EVERY
    assert _compared(ae, "n3") == [1, 2]  # another peer's turn is its own
    store.take_dirty()
    assert _compared(ae, "n2") == [1, 2]  # the next turn's comparison
    assert _compared(ae, "n2") == [2]  # changed since the flush before the last: still lately
    store.take_dirty()
    for _ in range(2):
        assert _compared(ae, "n2") == [1, 2]  # two flushes without a change: it stands still


def test_a_merge_and_a_failed_flush_count_as_changes():
    store = _store()
    ae = AntiEntropy(store, shards_per_round=64)
    assert _compared(ae, "n2") == [1, 2]
    store.merge(HOT, PNCounter.empty().increment("n3:1", 2))  # a replica's merge
    assert _compared(ae, "n2") == [1, 2]  # its first comparison is due
    assert _compared(ae, "n2") == [2]
    taken = store.take_dirty()
    store.take_dirty()
    assert _compared(ae, "n2") == [1, 2]
    store.mark_dirty(taken)  # the flush failed: its counters are marked again
    assert _compared(ae, "n2") == [1, 2]
    assert _compared(ae, "n2") == [2]


def test_busy_shards_take_turns_within_a_bound_per_exchange():
    """When many shards are busy, at most HOT_PER_EXCHANGE of them are compared per
    exchange, those that waited longest first: each still gets its turn, evenly."""
    busy = 5 * HOT_PER_EXCHANGE
    ae, asked = _busy(busy)
    turns = [
        [s for s, _ in ae.fingerprints(asked, list(range(busy)), True, "n2")["shares"]]
        for _ in range(3 * 5)
    ]
    assert all(len(turn) == HOT_PER_EXCHANGE for turn in turns)
    for start in range(0, len(turns), 5):  # every 5 exchanges, every shard once
        window = [shard for turn in turns[start : start + 5] for shard in turn]
        assert sorted(window) == list(range(busy))


def test_shards_that_stand_still_go_first_and_a_busy_shard_left_out_keeps_its_turn():
    """The cap per exchange (shards_per_round) is filled with the shards that stand still
    first; a busy shard that finds no room is not counted as compared."""
    store = _store()
    store.increment(HOT, "n1:1", 1)
    ae = AntiEntropy(store, shards_per_round=1)
    for _ in range(3):
        assert _compared(ae, "n2") == [2]  # the still shard takes the only room
    quiet = Asked(states=[(1, 12345)], receipts=None)  # shard 2 agrees now: room for 1
    assert [s for s, _ in ae.fingerprints(quiet, [1, 2], True, "n2")["shares"]] == [1]


def test_a_loaded_shard_is_not_busy():
    """A counter loaded from the durable replica is not a change (load_durable leaves the
    shard's emptied marks behind): the shard is compared at once."""
    store = CounterStore(SHARDS.__getitem__)
    store.load_durable([(HOT, PNCounter.empty().increment("n2:1", 5))])
    assert store.has(HOT)
    ae = AntiEntropy(store, shards_per_round=64)
    for _ in range(2):
        assert _compared(ae, "n2") == [1, 2]
    store.take_dirty()
    assert _compared(ae, "n2") == [1, 2]


def test_the_busy_shards_compared_per_exchange_grow_with_the_shards_shared():
    busy = 1024
    ae, asked = _busy(busy)
    fields = ae.fingerprints(asked, list(range(busy)), True, "n2")
    assert len(fields["shares"]) == busy // 32
    assert ae.divergent_shards == busy  # deferred ones counted as differing too


def test_what_is_kept_per_peer_goes_with_the_peer():
    """A peer removed from the ring leaves nothing behind: its last total, its turn for
    full digests and its deferred shards are dropped, the other peers' kept."""
    ae, asked = _busy(4)
    for peer in ("n2", "n3"):
        ae.digests([0, 1, 2, 3], now_ms=0, recovered=True, peer=peer)
        ae.heard_total(peer, 7)
        ae.fingerprints(asked, [0, 1, 2, 3], recovered=True, peer=peer)
    kept = (ae.totals, ae._unsent, ae._deferred)
    assert [sorted(d) for d in kept] == [["n2", "n3"]] * 3

    ae.forget_all_but({"n2", "n4"})

    assert [sorted(d) for d in kept] == [["n2"]] * 3

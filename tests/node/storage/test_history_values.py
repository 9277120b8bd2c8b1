"""What the history recorder takes from the store (take_history_values): the value of every
counter changed since the last take whose shard this node records, each once; counters of
the other shards count as taken, and nothing changed since is taken again."""

from __future__ import annotations

from crdt import PNCounter
from node.base.keys import Key
from node.storage.store import CounterStore

A: Key = ("t", "ns", "a")  # shard 1
BB: Key = ("t", "ns", "bb")  # shard 2
CCC: Key = ("t", "ns", "ccc")  # shard 3


def shard_of(key: Key) -> int:
    return len(key[2])


def test_values_of_the_recorded_shards_only_each_once() -> None:
    store = CounterStore(shard_of)
    store.increment_slot(A, "n1:1", 5)
    store.increment_slot(A, "n1:1", -2)
    store.merge(BB, PNCounter.from_slot("n2:1", 7, 0))
    store.increment_slot(CCC, "n1:1", -4)
    asked: list[int] = []

    def records(shard: int) -> bool:
        asked.append(shard)
        return shard != 2

    # (key, value, version): version sums every increment and decrement (5 + 2 for A)
    assert sorted(store.take_history_values(records)) == [(A, 3, 7), (CCC, -4, 4)]
    assert sorted(asked) == [1, 2, 3]  # once per shard
    assert store.take_history_values(records) == []  # BB counts as taken too
    store.merge(BB, PNCounter.from_slot("n3:1", 1, 0))
    assert store.take_history_values(lambda shard: True) == [(BB, 8, 8)]


def test_a_limited_take_leaves_the_rest_for_the_next() -> None:
    """The recorder takes a large change set in parts (a limit per take), yielding to the
    event loop between them: each counter comes out once, and nothing is lost."""
    store = CounterStore(shard_of)
    for key in (A, BB, CCC):
        store.increment_slot(key, "n1:1", 1)
    assert store.history_dirty_count() == 3
    first = store.take_history_values(lambda shard: True, limit=2)
    assert len(first) == 2 and store.history_dirty_count() == 1
    rest = store.take_history_values(lambda shard: True, limit=2)
    assert sorted(first + rest) == [(A, 1, 1), (BB, 1, 1), (CCC, 1, 1)]
    assert store.history_dirty_count() == 0

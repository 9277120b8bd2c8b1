"""CounterStore.merge_share (REPLICATE's merge) leaves the store exactly as merge
does (state, share, digest, dirty slots, change marks), whatever the incoming state."""

from __future__ import annotations

import random

import pytest

from crdt import PNCounter
from node.storage.store import CounterStore

ACTORS = ["n1:1", "n2:1", "n3:2"]


def _shard_of(key):
    return len(key[2]) % 3


def _state(rng: random.Random) -> PNCounter:
    state = PNCounter.empty()
    for actor in rng.sample(ACTORS, rng.randint(0, 3)):
        p, n = rng.choice([0, 1, 7, 2**64 - 1]), rng.choice([0, 0, 3])
        if p or n:
            state = state.merge(PNCounter.from_slot(actor, p, n))
    return state


@pytest.mark.parametrize("seed", range(200))
def test_merge_share_is_merge(seed: int) -> None:
    rng = random.Random(seed)
    a, b = CounterStore(_shard_of, track_changes=True), CounterStore(_shard_of, track_changes=True)
    keys = [("t", "ns", "k" * i) for i in range(1, 5)]
    for key in keys:
        start = _state(rng)
        a.merge(key, start)
        b.merge(key, start)
    a.take_dirty(), b.take_dirty(), a.take_changes(), b.take_changes()
    for _ in range(6):
        key, incoming = rng.choice(keys), _state(rng)
        share = a.merge_share(key, incoming)
        b.merge(key, incoming)
        assert share == b.share(key)
        assert a.get(key) == b.get(key)
    assert [a.digest(s) for s in range(3)] == [b.digest(s) for s in range(3)]
    assert sorted(a.take_dirty(), key=repr) == sorted(b.take_dirty(), key=repr)
    assert sorted(a.take_changes()) == sorted(b.take_changes())

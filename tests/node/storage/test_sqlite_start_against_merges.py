"""A randomized differential check of the SQLite start (named and slot pages, tiny
pages) against plain merges: same states, same digests, same values; and a store that
merged some counters from a peer before the load holds their merge."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdt import PNCounter
from crdt.gcounter import UINT64_MAX
from node.storage import sqlite_slots
from node.storage.durable_sqlite import SqliteReplica
from node.storage.store import CounterStore

PARTS = ["t", "ns", "ns2", 'ns"', "n\\s", "é", "a", "", "x y", "ns\x01"]
NAMES = ["a", "b", "c", "aa", 'q"', "b\\", "é" * 3, "z" * 120, "]", '","', "0", "1"]
ACTORS = ["n1:1", "n2:1", "n3:4"]


def _random_state(rng: random.Random, single: bool = False) -> PNCounter:
    state = PNCounter.empty()
    slots = [1] * 80 + [2] if single else [1, 1, 1, 2, 3]
    for actor in rng.sample(ACTORS, rng.choice(slots)):
        if single and rng.random() < 0.98:
            p, n = rng.choice([0, 1, 5, 2**40, 2**63 - 1]), rng.choice([0, 0, 1, 2**63 - 1])
            if not (p or n):
                p = 1
        else:
            p = rng.choice([1, 5, 2**40, 2**63 - 1, 2**63, UINT64_MAX])
            n = rng.choice([0, 0, 1, 2**63])
        state = state.merge(PNCounter.from_slot(actor, p, n))
    return state


def _shard_of(key):
    return sum(map(ord, "/".join(key))) % 4


@pytest.mark.parametrize("concentrated", [False, True])
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("page_rows", [2, 3, 7, 50_000])
async def test_sqlite_start_matches_merges(
    tmp_path: Path, monkeypatch, seed, page_rows, concentrated
):
    monkeypatch.setattr(sqlite_slots, "LOAD_PAGE", page_rows)
    monkeypatch.setattr(sqlite_slots, "SMALL_RANGE", 3)
    rng = random.Random(seed)
    states = {}
    for _ in range(rng.randint(5, 80)):
        tenant = rng.choice(PARTS[: 2 if concentrated else 4]) or "t"
        namespace = rng.choice(PARTS[:3] if concentrated else PARTS) or "ns"
        name = rng.choice(NAMES) + str(rng.randint(0, 30))
        if concentrated and rng.random() < 0.97:
            name = f"c{rng.randint(0, 200)}"
        states[(tenant, namespace, name)] = _random_state(rng, concentrated)
    named = []
    wanted = {0, 1, 2}
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    try:
        await replica.write([(key, _shard_of(key), state) for key, state in states.items()])
        loaded = CounterStore(_shard_of, track_changes=True)
        early = {k: _random_state(rng) for k in rng.sample(sorted(states), min(3, len(states)))}
        for key, state in early.items():  # merged from a peer while the load runs
            if _shard_of(key) in wanted:
                loaded.merge(key, state)
        async for page in replica.load_pages(wanted):
            named.append(type(page).__name__)
            loaded.load_page(page)
    finally:
        await replica.close()
    expected = CounterStore(_shard_of)
    for key, state in states.items():
        if _shard_of(key) in wanted:
            expected.merge(key, state)
    for key, state in early.items():
        if _shard_of(key) in wanted:
            expected.merge(key, state)
    for key in set(states) | set(early):
        assert loaded.get(key) == expected.get(key), key
        assert loaded.value(key) == expected.value(key), key
    for shard in range(4):
        assert loaded.digest(shard) == expected.digest(shard), shard
    assert len(loaded) == len(expected)
    if concentrated and page_rows in (3, 7):
        assert "NamedSlots" in named

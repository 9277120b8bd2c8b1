"""The SQLite replica's load reads keys back exactly, whatever their names hold (a fast
path splits the stored JSON text when it has no escapes), and refuses a corrupt row."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt import PNCounter
from crdt.gcounter import UINT64_MAX
from node.base.keys import Key
from node.storage import sqlite_slots
from node.storage.durable import DurableError, NamedSlots, SlotPage, slot_rows, states_of
from node.storage.durable_sqlite import SqliteReplica

NAMES = ["plain", 'quo"te', "back\\slash", '","', "comma,name", "ünïcödé", "tab\tname", "]"]
NAMES += ["n" * 100, "é" * 100, "a", "b\\", "c"]  # long ones, an escape between plain ones


async def test_keys_and_slots_load_back_exactly(tmp_path: Path):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    states = {}
    for index, name in enumerate(NAMES * 2):
        key = ("tenant", "ns" if index < len(NAMES) else "ns2", name)
        state = PNCounter.empty().increment("n1:1", index + 1)
        if index % 2:
            state = state.increment("n2:3", -index)  # two actors: two rows, one counter
        states[key] = state
    try:
        await replica.write([(key, 7, state) for key, state in states.items()])
        await replica.write(
            [(("tenant", "ns", "elsewhere"), 8, PNCounter.empty().increment("a:1", 1))]
        )
        loaded = dict(await replica.load({7}))
    finally:
        await replica.close()
    assert loaded == states


@pytest.mark.parametrize("stored", ['["t","ns"]', '["t","ns","c","d"]', '["t","ns",""]'])
async def test_a_corrupt_key_is_a_durable_error(tmp_path: Path, stored: str):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    try:
        state = PNCounter.empty().increment("n1:1", 1)
        await replica.write([(("t", "ns", "b"), 1, state), (("t", "ns", "c"), 1, state)])
        replica._db.execute("UPDATE slots SET counter = ? WHERE counter LIKE '%c%'", (stored,))
        with pytest.raises(DurableError):
            await replica.load({1})
    finally:
        await replica.close()


async def test_slot_pages_hold_whole_counters_whatever_the_page_size(tmp_path, monkeypatch):
    """Pages end between counters: a counter whose slots pass a page's end starts the
    next one, and one whose slots fill a page comes whole on its own."""
    monkeypatch.setattr(sqlite_slots, "LOAD_PAGE", 3)
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    states = {}
    for index in range(7):
        state = PNCounter.empty()
        for actor in range(1 + index % 5):  # 1 to 5 slots: some pass or fill a page
            state = state.increment(f"n{actor}:1", index + actor + 1)
        states[("t", "ns", f"c{index}")] = state
    try:
        await replica.write([(key, 7, state) for key, state in states.items()])
        await replica.write([(("t", "ns", "other"), 8, PNCounter.from_slot("a:1", 1, 0))])
        pages = [page async for page in replica.load_slots({7})]
    finally:
        await replica.close()
    seen = [key for page in pages for key in dict.fromkeys(row[0] for row in page)]
    assert len(seen) == len(set(seen)) == 7  # no counter in two pages
    assert dict(states_of([row for page in pages for row in page])) == states
    assert all(row[1] == 7 for page in pages for row in page)


async def test_counts_past_int64_load_exactly(tmp_path: Path):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    state = PNCounter.from_slot("n1:1", UINT64_MAX, 2**63).merge(PNCounter.from_slot("n2:1", 1, 0))
    try:
        await replica.write([(("t", "ns", "big"), 3, state)])
        assert dict(await replica.load({3})) == {("t", "ns", "big"): state}
    finally:
        await replica.close()


@pytest.mark.parametrize(
    "column, text",
    [("p", "-0000000000000000005"), ("n", "x"), ("p", "99999999999999999999"), ("actor", "")],
)
async def test_a_corrupt_slot_is_a_durable_error(tmp_path: Path, column: str, text: str):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    try:
        await replica.write([(("t", "ns", "c"), 1, PNCounter.empty().increment("n1:1", 1))])
        replica._db.execute(f"UPDATE slots SET {column} = ?", (text,))
        with pytest.raises(DurableError):
            await replica.load({1})
    finally:
        await replica.close()


async def _pages(replica: SqliteReplica, shards: set[int]) -> list[SlotPage]:
    return [page async for page in replica.load_pages(shards)]


@pytest.mark.parametrize("page_rows", [3, 4, 50_000])
async def test_named_pages_and_slot_pages_load_every_counter_exactly(
    tmp_path: Path, monkeypatch, page_rows: int
):
    """Namespaces of one-slot counters come as named pages (names cut out by SQLite);
    counters of several slots, escaped names, counts past int64, empty slots and other
    shards' counters in between still load exactly, whatever the page size."""
    monkeypatch.setattr(sqlite_slots, "LOAD_PAGE", page_rows)
    monkeypatch.setattr(sqlite_slots, "SMALL_RANGE", 2)
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    states: dict[Key, PNCounter] = {}
    for space in range(4):
        for index in range(25):
            key = (f"t{space % 2}", f"ns{space}", f"c{index:03d}")
            state = PNCounter.from_slot(f"n{index % 3}:1" if space else "n1:1", index, 1)
            if space == 2 and index % 7 == 3:  # several slots, among one-slot counters
                state = state.merge(PNCounter.from_slot("n9:2", 0, index))
            states[key] = state
    states[("t1", "ns3", 'q"uote')] = PNCounter.from_slot("n1:1", 3, 0)
    states[("t1", "ns3", "é" * 40)] = PNCounter.from_slot("n1:1", 4, 0)
    states[("t1", "ns3", "c009")] = PNCounter.from_slot("n1:1", UINT64_MAX, 2**63)
    states[("t1", "ns1", "zero")] = PNCounter.empty()
    elsewhere = {("t0", "ns0", "c0105"): PNCounter.from_slot("n1:1", 1, 0)}
    try:
        await replica.write([(key, 7, state) for key, state in states.items()])
        await replica.write([(key, 8, state) for key, state in elsewhere.items()])
        replica._db.execute(
            'INSERT INTO slots VALUES (\'["t1","ns1","zero"]\', 7, \'n1:1\', ?, ?)',
            ("0" * 20, "0" * 20),
        )
        pages = await _pages(replica, {7})
        loaded = dict(await replica.load({7}))
    finally:
        await replica.close()
    assert loaded == states  # the empty one as stored: an empty state
    assert any(isinstance(page, NamedSlots) for page in pages)
    rows = [row for page in pages for row in slot_rows(page)]
    assert len({row[0] for row in rows}) == len(states)  # the empty one too, as the load reads it
    assert all(row[1] == 7 for row in rows)


@pytest.mark.parametrize(
    "column, text",
    [
        ("p", "-0000000000000000005"),
        ("n", "x"),
        ("p", "99999999999999999999"),
        ("actor", ""),
        ("counter", '["t","ns","c","d"]'),
        ("counter", '["t","ns","c'),
    ],
)
async def test_a_corrupt_row_among_one_slot_counters_is_a_durable_error(
    tmp_path: Path, column: str, text: str
):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    try:
        state = PNCounter.from_slot("n1:1", 1, 0)
        await replica.write([(("t", "ns", name), 1, state) for name in ("a", "b", "c", "e")])
        replica._db.execute(f"UPDATE slots SET {column} = ? WHERE counter LIKE '%c%'", (text,))
        with pytest.raises(DurableError):
            await replica.load({1})
    finally:
        await replica.close()

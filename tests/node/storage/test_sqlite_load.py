"""The SQLite replica's load reads keys back exactly, whatever their names hold (a fast
path splits the stored JSON text when it has no escapes), and refuses a corrupt row."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt import PNCounter
from node.storage.durable import DurableError
from node.storage.durable_sqlite import SqliteReplica

NAMES = ["plain", 'quo"te', "back\\slash", '","', "comma,name", "ünïcödé", "tab\tname", "]"]


async def test_keys_and_slots_load_back_exactly(tmp_path: Path):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    states = {}
    for index, name in enumerate(NAMES):
        key = ("tenant", "ns", name)
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


async def test_a_corrupt_key_is_a_durable_error(tmp_path: Path):
    replica = SqliteReplica(tmp_path / "durable.sqlite3")
    try:
        await replica.write([(("t", "ns", "c"), 1, PNCounter.empty().increment("n1:1", 1))])
        replica._db.execute('UPDATE slots SET counter = \'["t","ns"]\'')
        with pytest.raises(DurableError):
            await replica.load({1})
    finally:
        await replica.close()

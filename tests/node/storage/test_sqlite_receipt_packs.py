"""SQLite stores a request's receipts as one pack row; a data dir written when receipts were
one row each still answers them after an upgrade in place, and both kinds expire."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from crdt.receipts import Receipt
from node.storage.durable import member
from node.storage.durable_sqlite import SqliteReplica

WINDOW = 60_000
SHARD = 7


def _batch(at_ms: int, request: str, count: int) -> list:
    return [
        (("t", "ns", f"c{i}"), SHARD, f"{request}#{i}", Receipt(at_ms, "n1:1", "f" * 32, i + 1))
        for i in range(count)
    ]


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def _loaded(replica: SqliteReplica, now_ms: int) -> list:
    return [e async for page in replica.load_receipts({SHARD}, now_ms) for e in page]


async def test_a_keyed_batch_is_one_row_and_loads_whole(tmp_path: Path) -> None:
    path, now_ms = tmp_path / "durable.sqlite3", int(time.time() * 1000)
    replica = SqliteReplica(path)
    try:
        await replica.write_receipts(_batch(now_ms, "K", 100), WINDOW, now_ms)
        await replica.write_receipts(_batch(now_ms + 1, "L", 100), WINDOW, now_ms)
        assert _count(path, "receipt_packs") == 2
        assert sorted(await _loaded(replica, now_ms)) == sorted(
            _batch(now_ms, "K", 100) + _batch(now_ms + 1, "L", 100)
        )
        assert [e async for page in replica.load_receipts({SHARD + 1}, now_ms) for e in page] == []
    finally:
        await replica.close()


async def test_rows_written_before_packs_are_still_answered_and_expire(tmp_path: Path) -> None:
    """An upgraded node: its receipts table (one row per receipt) has a live row and an
    expired one; the live one loads beside new packs, and expiry drops both kinds."""
    path, now_ms = tmp_path / "durable.sqlite3", int(time.time() * 1000)
    await SqliteReplica(path).close()  # the schema of today, receipts table included
    old = Receipt(now_ms - 10, "n1:1", "e" * 32, 42)
    with sqlite3.connect(path) as db:
        insert = "INSERT INTO idempotency_receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        counter = member(("t", "ns", "c"))
        db.execute(insert, (counter, "before", SHARD, now_ms + WINDOW, *old.to_wire()))
        db.execute(insert, (counter, "gone", SHARD, now_ms - 1, *old.to_wire()))
    replica = SqliteReplica(path)
    try:
        new = _batch(now_ms, "K", 3)
        dropped = await replica.write_receipts(new, WINDOW, now_ms)
        assert dropped == 1 and _count(path, "idempotency_receipts") == 1
        assert sorted(await _loaded(replica, now_ms)) == sorted(
            [(("t", "ns", "c"), SHARD, "before", old), *new]
        )
        later_ms = now_ms + WINDOW + 1
        assert await replica.write_receipts([], WINDOW, later_ms) == 4  # 1 row, 1 pack of 3
        assert _count(path, "idempotency_receipts") == _count(path, "receipt_packs") == 0
        assert await _loaded(replica, later_ms) == []
    finally:
        await replica.close()


async def test_a_receipt_stored_twice_loads_once_as_first_stored(tmp_path: Path) -> None:
    path, now_ms = tmp_path / "durable.sqlite3", int(time.time() * 1000)
    replica = SqliteReplica(path)
    key = ("t", "ns", "c")
    first, later = Receipt(now_ms + 5, "n1:1", "a", 1), Receipt(now_ms, "n2:1", "b", 2)
    try:
        await replica.write_receipts([(key, SHARD, "K#0", first)], WINDOW, now_ms)
        await replica.write_receipts([(key, SHARD, "K#0", later)], WINDOW, now_ms)
        assert await _loaded(replica, now_ms) == [(key, SHARD, "K#0", first)]
    finally:
        await replica.close()

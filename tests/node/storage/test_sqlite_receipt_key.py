"""SQLite receipts are keyed (idempotency key, counter): a keyed batch's receipt rows share
pages. A data dir written with the earlier (counter, idempotency key) table keeps its rows."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from crdt.receipts import Receipt
from node.storage.durable import member
from node.storage.durable_sqlite import SqliteReplica

OLD_TABLE = """
CREATE TABLE idempotency_receipts (
    counter TEXT NOT NULL, idem TEXT NOT NULL, shard INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
    fingerprint TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (counter, idem)
) WITHOUT ROWID;
CREATE INDEX receipts_by_expiry ON idempotency_receipts (expires_ms);
CREATE INDEX receipts_by_shard ON idempotency_receipts (shard, counter, idem);
"""


def _primary_key(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("PRAGMA index_xinfo('sqlite_autoindex_idempotency_receipts_1')")
        return [name for _, _, name, *_ in rows if name is not None][:2]


async def test_receipt_rows_are_keyed_by_idempotency_key_first(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite3"
    replica = SqliteReplica(path)
    await replica.close()
    assert _primary_key(path) == ["idem", "counter"]


async def test_an_earlier_receipt_table_is_rebuilt_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite3"
    now_ms = int(time.time() * 1000)
    counter = ("t", "ns", "c")
    with sqlite3.connect(path) as db:
        db.executescript(OLD_TABLE)
        db.execute(
            "INSERT INTO idempotency_receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (member(counter), "order-1", 7, now_ms + 60_000, now_ms, "n1:1", "f" * 32, 42),
        )
    replica = SqliteReplica(path)
    try:
        loaded = [entry async for page in replica.load_receipts({7}, now_ms) for entry in page]
        assert loaded == [(counter, 7, "order-1", Receipt(now_ms, "n1:1", "f" * 32, 42))]
        await replica.write_receipts(
            [(counter, 7, "order-2", Receipt(now_ms, "n1:1", "g" * 32, 43))], 60_000, now_ms
        )
        loaded = [entry async for page in replica.load_receipts({7}, now_ms) for entry in page]
        assert [idem for _, _, idem, _ in loaded] == ["order-1", "order-2"]
    finally:
        await replica.close()
    assert _primary_key(path) == ["idem", "counter"]

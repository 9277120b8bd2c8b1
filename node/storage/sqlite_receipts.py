"""Idempotency receipts in the SQLite durable replica (durable_sqlite.py): their tables, the
migrations of tables written by earlier versions, and the statements a flush and a load run.

One row per request: a pack (receipt_packs.py) of the receipts that share a time, an actor
and a fingerprint, with their one expiry, indexed by expiry (each write deletes at most
EXPIRE_BATCH expired packs). A keyed batch of 100 ops thus writes one row on each replica
instead of 100 rows and 200 index entries, and a receipt takes about 58 bytes on disk instead
of 256 (30-character idempotency keys, after VACUUM; the CPU it saves is in
loadtest/README.md). A load reads every unexpired pack in id order and keeps the receipts of
the shards it loads; a receipt stored twice merges in memory. Rows of the table written
before packs, `idempotency_receipts`, one per (counter, idempotency key), are still loaded
and expired, so a node upgraded in place answers replays of receipts it stored before;
nothing new goes there, and it empties within a window.

Every function runs in the replica's worker thread, inside its lock (and a flush's inside
its transaction).
"""

from __future__ import annotations

import sqlite3

from crdt import CodecError
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage import receipt_packs
from node.storage.durable import RECEIPT_PAGE, DurableError, ReceiptEntry, key_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_receipts (
    counter TEXT NOT NULL,
    idem TEXT NOT NULL,
    shard INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (idem, counter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_by_expiry ON idempotency_receipts (expires_ms);
CREATE INDEX IF NOT EXISTS receipts_by_shard ON idempotency_receipts (shard, counter, idem);
CREATE TABLE IF NOT EXISTS receipt_packs (
    id INTEGER PRIMARY KEY,
    expires_ms INTEGER NOT NULL,
    receipts INTEGER NOT NULL,
    pack BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS receipt_packs_by_expiry ON receipt_packs (expires_ms);
"""
INSERT_PACK = "INSERT INTO receipt_packs (expires_ms, receipts, pack) VALUES (?, ?, ?)"
EXPIRE_PACKS = """
DELETE FROM receipt_packs WHERE id IN (
    SELECT id FROM receipt_packs WHERE expires_ms < ? LIMIT ?
) RETURNING receipts
"""
LOAD_PACKS = """
SELECT id, pack FROM receipt_packs WHERE id > ? AND expires_ms >= ? ORDER BY id LIMIT ?
"""
PACK_PAGE = 200  # packs read at a time (at most PACK_MAX_ENTRIES receipts each)
# Each write drops at most this many expired packs more than it wrote (and this many rows
# of the table written before packs, and lapsed reservations), so a write never stalls on
# a backlog (after a long stop, say); writes come at least every flush, so it drains.
EXPIRE_BATCH = 5_000
EXPIRE_ROWS = """
DELETE FROM idempotency_receipts WHERE (counter, idem) IN (
    SELECT counter, idem FROM idempotency_receipts WHERE expires_ms < ? LIMIT ?
)
"""
LOAD_ROWS = """
SELECT counter, idem, shard, at_ms, actor, fingerprint, value FROM idempotency_receipts
WHERE shard = ? AND (counter, idem) > (?, ?) AND expires_ms >= ?
ORDER BY counter, idem LIMIT ?
"""


def migrate_key(db: sqlite3.Connection) -> None:
    """Rebuild a receipt table keyed (counter, idem), as written before, keyed (idem,
    counter): a keyed batch's receipts ("K#0", "K#1", ...) then land side by side in a
    few pages instead of one random page each, a third of the CPU per row (7-17 us
    against 23-45 us, 50,000-150,000 rows). Runs before SCHEMA, which creates the new table."""
    found = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
    row = db.execute(found, ("idempotency_receipts",)).fetchone()
    if row is None or "PRIMARY KEY (counter, idem)" not in row[0]:
        return
    with db:
        db.execute("BEGIN")
        db.execute("DROP INDEX IF EXISTS receipts_by_expiry")
        db.execute("DROP INDEX IF EXISTS receipts_by_shard")
        db.execute("ALTER TABLE idempotency_receipts RENAME TO receipts_by_counter")
        for statement in SCHEMA.split(";"):
            if "idempotency_receipts" in statement:
                db.execute(statement)
        db.execute("INSERT INTO idempotency_receipts SELECT * FROM receipts_by_counter")
        db.execute("DROP TABLE receipts_by_counter")


def migrate_unexpiring(db: sqlite3.Connection) -> None:
    """Move receipts from the table before expiry was stored (kept for a day, the default
    window) and drop it. Runs after SCHEMA."""
    found = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'receipts'"
    if db.execute(found).fetchone() is None:
        return
    with db:
        db.execute("BEGIN")
        db.execute(
            "INSERT OR IGNORE INTO idempotency_receipts SELECT counter, idem, shard,"
            " at_ms + 86400000, at_ms, actor, fingerprint, value FROM receipts"
        )
        db.execute("DROP TABLE receipts")


def write(db: sqlite3.Connection, packs: list[tuple[int, int, bytes]]) -> None:
    """Store packs made by receipt_packs.pack (made before the transaction begins)."""
    db.executemany(INSERT_PACK, packs)


def expire(db: sqlite3.Connection, now_ms: int, written: int = 0) -> int:
    """Drop a bounded number of expired packs and rows: EXPIRE_BATCH more packs than the
    `written` ones the same write added, so expiry keeps up with any rate of keyed requests
    per flush and a backlog drains; how many receipts they held."""
    packs = db.execute(EXPIRE_PACKS, (now_ms, EXPIRE_BATCH + written)).fetchall()
    dropped: int = sum(count for (count,) in packs)
    return dropped + db.execute(EXPIRE_ROWS, (now_ms, EXPIRE_BATCH)).rowcount


def row_page(
    db: sqlite3.Connection, shard: int, after: tuple[str, str], now_ms: int, keys: dict[str, Key]
) -> list[ReceiptEntry]:
    """A page of a shard's rows written before packs, after (counter, idempotency key)."""
    page: list[ReceiptEntry] = []
    for counter, idem, _, at_ms, actor, fingerprint, value in db.execute(
        LOAD_ROWS, (shard, *after, now_ms, RECEIPT_PAGE)
    ):
        key = keys.get(counter)
        if key is None:
            key = keys[counter] = key_of(counter)
        try:
            receipt = Receipt.from_wire([at_ms, actor, fingerprint, value])
        except CodecError as error:
            raise DurableError(f"corrupt receipt in sqlite: {error}") from error
        page.append((key, shard, idem, receipt))
    return page


def pack_page(
    db: sqlite3.Connection, after: int, now_ms: int, wanted: frozenset[int], keys: dict[Key, Key]
) -> tuple[list[ReceiptEntry], int | None]:
    """The receipts of these shards in the packs after id `after`, and the id the next page
    starts after (None: this was the last page)."""
    rows = db.execute(LOAD_PACKS, (after, now_ms, PACK_PAGE)).fetchall()
    found: list[ReceiptEntry] = []
    for _, blob in rows:
        try:
            found += receipt_packs.unpack(blob, wanted, keys)
        except receipt_packs.PackError as error:
            raise DurableError(f"corrupt receipt pack in sqlite: {error}") from error
    return found, rows[-1][0] if len(rows) == PACK_PAGE else None

"""SQLite in the data dir as the durable replica: the embedded default, nothing to install.

One row per (counter, actor) slot. Counts are stored as 20-digit zero-padded text, because
SQLite integers are signed 64-bit and slots are unsigned; padded text compares like the
numbers, so an upsert keeps max(p) and max(n) and writes stay idempotent. WAL with
synchronous=NORMAL survives a killed process (not a power cut of the machine). The sqlite3
module blocks, so each call runs in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.base.threads import in_thread
from node.storage.durable import DurableError, Entry, ReceiptEntry, key_of, member, state_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    counter TEXT NOT NULL,
    shard INTEGER NOT NULL,
    actor TEXT NOT NULL,
    p TEXT NOT NULL,
    n TEXT NOT NULL,
    PRIMARY KEY (counter, actor)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slots_by_shard ON slots (shard);
CREATE TABLE IF NOT EXISTS receipts (
    counter TEXT NOT NULL,
    shard INTEGER NOT NULL,
    idem TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (counter, idem)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_by_shard ON receipts (shard);
"""
UPSERT = """
INSERT INTO slots (counter, shard, actor, p, n) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (counter, actor) DO UPDATE SET p = max(p, excluded.p), n = max(n, excluded.n)
"""


def _padded(count: int) -> str:
    return f"{count:020d}"


class SqliteReplica:
    def __init__(self, path: Path) -> None:
        self.name = "sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = asyncio.Lock()

    def _write(self, entries: Sequence[Entry]) -> None:
        rows = []
        for key, shard, state in entries:
            name = member(key)
            for actor in state.actors():
                p, n = state.slot(actor)
                rows.append((name, shard, actor, _padded(p), _padded(n)))
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(UPSERT, rows)

    async def write(self, entries: Sequence[Entry]) -> None:
        async with self._lock:
            try:
                await in_thread(self._write, entries)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite write failed: {error}") from error

    def _load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        slots: dict[str, dict[str, tuple[int, int]]] = {}
        marks = ",".join("?" * len(shards))
        query = f"SELECT counter, actor, p, n FROM slots WHERE shard IN ({marks})"
        for counter, actor, p, n in self._db.execute(query, list(shards)):
            try:
                slots.setdefault(counter, {})[actor] = (int(p), int(n))
            except ValueError as error:
                raise DurableError("corrupt count in sqlite") from error
        return [(key_of(name), state_of(found)) for name, found in slots.items()]

    async def load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        if not shards:
            return []
        async with self._lock:
            try:
                return await in_thread(self._load, shards)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite load failed: {error}") from error

    def _write_receipts(self, entries: Sequence[ReceiptEntry], window_ms: int) -> None:
        rows = [
            (member(key), shard, idem, r.at_ms, r.actor, r.fingerprint, r.value)
            for key, shard, found in entries
            for idem, r in found.items()
        ]
        now_ms = int(time.time() * 1000)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?,?,?)", rows)
            self._db.execute("DELETE FROM receipts WHERE at_ms < ?", (now_ms - window_ms,))

    async def write_receipts(self, entries: Sequence[ReceiptEntry], window_ms: int) -> None:
        if not entries:
            return
        async with self._lock:
            try:
                await in_thread(self._write_receipts, entries, window_ms)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite receipt write failed: {error}") from error

    def _load_receipts(self, shards: Collection[int]) -> list[ReceiptEntry]:
        found: dict[str, dict[str, Receipt]] = {}
        marks = ",".join("?" * len(shards))
        query = (
            "SELECT counter, shard, idem, at_ms, actor, fingerprint, value FROM receipts"
            f" WHERE shard IN ({marks})"
        )
        shard_of: dict[str, int] = {}
        for counter, shard, idem, at_ms, actor, fingerprint, value in self._db.execute(
            query, list(shards)
        ):
            found.setdefault(counter, {})[idem] = Receipt(at_ms, actor, fingerprint, value)
            shard_of[counter] = shard
        return [(key_of(name), shard_of[name], rows) for name, rows in found.items()]

    async def load_receipts(self, shards: Collection[int]) -> list[ReceiptEntry]:
        if not shards:
            return []
        async with self._lock:
            try:
                return await in_thread(self._load_receipts, shards)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite receipt load failed: {error}") from error

    async def last_incarnation(self, node_id: str, current: int) -> int:
        """The incarnation file sits in the same data dir as this file: nothing to add."""
        return 0

    async def ping(self) -> None:
        """A local file is there as long as the node is."""

    async def close(self) -> None:
        async with self._lock:
            await in_thread(self._db.close)

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
from collections.abc import Collection, Sequence
from pathlib import Path

from crdt import PNCounter
from node.durable import DurableError, Entry, key_of, member, state_of
from node.protocol import Key

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
                await asyncio.to_thread(self._write, entries)
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
                return await asyncio.to_thread(self._load, shards)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite load failed: {error}") from error

    async def ping(self) -> None:
        """A local file is there as long as the node is."""

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._db.close)

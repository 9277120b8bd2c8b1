"""SQLite in the data dir as the durable replica: the embedded default, nothing to install.

One row per (counter, actor) slot. Counts are stored as 20-digit zero-padded text, because
SQLite integers are signed 64-bit and slots are unsigned; padded text compares like the
numbers, so an upsert keeps max(p) and max(n) and writes stay idempotent. WAL with
synchronous=NORMAL survives a killed process (not a power cut of the machine). The sqlite3
module blocks, so each call runs in a worker thread, one at a time.

Idempotency receipts: one row per request, a pack of the receipts that share a time, an
actor and a fingerprint (sqlite_receipts.py, receipt_packs.py). A flush (`write_changes`)
writes slots, receipts and reservations in one transaction.

Reservations (this node's grants of idempotency keys): one row per (counter, key) with the
attempt holding it and until when, indexed like the receipts; an ended one is deleted, a
lapsed one goes in bounded steps like an expired receipt. The file is this node's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from crdt import PNCounter
from node.base.keys import Key
from node.base.threads import in_thread
from node.storage import sqlite_receipts
from node.storage.durable import (
    RECEIPT_PAGE,
    DurableError,
    Entry,
    ReceiptEntry,
    ReservationEntry,
    SlotPage,
    SlotRow,
    key_of,
    member,
    slot_rows,
    states_of,
)
from node.storage.receipt_book import Reservation
from node.storage.receipt_packs import pack as pack_receipts
from node.storage.sqlite_receipts import EXPIRE_BATCH
from node.storage.sqlite_slots import SlotPages

Paged = TypeVar("Paged", bound=tuple[Key, int, str, Any])  # (counter, shard, key, what)

SLOTS_SCHEMA = """
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
RESERVATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    counter TEXT NOT NULL,
    idem TEXT NOT NULL,
    shard INTEGER NOT NULL,
    node TEXT NOT NULL,
    token TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (counter, idem)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reservations_by_expiry ON reservations (until_ms);
CREATE INDEX IF NOT EXISTS reservations_by_shard ON reservations (shard, counter, idem);
"""
SCHEMA = SLOTS_SCHEMA + sqlite_receipts.SCHEMA + RESERVATIONS_SCHEMA
STORED_SHARDS = """
WITH RECURSIVE held(shard) AS (
    SELECT min(shard) FROM slots
    UNION ALL
    SELECT (SELECT min(shard) FROM slots WHERE shard > held.shard) FROM held
    WHERE held.shard IS NOT NULL
)
SELECT shard FROM held WHERE shard IS NOT NULL
"""
PUT_RESERVATION = "INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?, ?)"
DELETE_RESERVATION = "DELETE FROM reservations WHERE counter = ? AND idem = ?"
EXPIRE_RESERVATIONS = """
DELETE FROM reservations WHERE (counter, idem) IN (
    SELECT counter, idem FROM reservations WHERE until_ms < ? LIMIT ?
)
"""
LOAD_RESERVATIONS = """
SELECT counter, idem, node, token, until_ms FROM reservations
WHERE shard = ? AND (counter, idem) > (?, ?) AND until_ms >= ?
ORDER BY counter, idem LIMIT ?
"""
# Slots go in as one JSON array per statement, [[counter, shard, actor, p, n], ...], read by
# json_each: one sqlite3_step per SLOT_CHUNK rows instead of one per row. The sqlite3 module
# gives the GIL back around each step and must win it back after, so with executemany a
# flush thread competed with the event loop for the GIL at every row and fell far behind
# under load (a backlog of a million rows at SIGTERM). "WHERE true" lets the parser tell
# the upsert's ON CONFLICT from a join constraint.
UPSERT = """
INSERT INTO slots (counter, shard, actor, p, n)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?) WHERE true
ON CONFLICT (counter, actor) DO UPDATE SET p = max(p, excluded.p), n = max(n, excluded.n)
"""
SLOT_CHUNK = 50_000  # rows per statement: the JSON text of one stays a few MB


def _padded(count: int) -> str:
    return f"{count:020d}"


class SqliteReplica:
    def __init__(self, path: Path) -> None:
        self.name = "sqlite"
        self.shared = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        sqlite_receipts.migrate_key(self._db)
        self._db.executescript(SCHEMA)
        sqlite_receipts.migrate_unexpiring(self._db)
        self._lock = asyncio.Lock()

    def _write_changes(
        self,
        entries: Sequence[Entry],
        receipts: Sequence[ReceiptEntry],
        reservations: Sequence[ReservationEntry],
        window_ms: int,
        now_ms: int,
    ) -> int:
        """One transaction: a kill at any point leaves all of it stored or none of it."""
        names: dict[Key, str] = {}  # a batch's receipts share a counter: one dump each
        rows = []
        for key, shard, state in entries:
            name = names[key] = member(key)
            for actor in state.actors():
                p, n = state.slot(actor)
                rows.append((name, shard, actor, _padded(p), _padded(n)))
        packs = pack_receipts(receipts, window_ms, now_ms) if receipts else []
        puts, deletes = [], []
        for key, shard, idem, held in reservations:
            name = names.get(key) or names.setdefault(key, member(key))
            if held is None:
                deletes.append((name, idem))
            elif held.until_ms >= now_ms:
                puts.append((name, idem, shard, held.node, held.token, held.until_ms))
        db = self._db
        with db:
            db.execute("BEGIN")
            # In key order: neighbouring rows share B-tree pages (a quarter less CPU per
            # row than random order on a large table).
            rows.sort()
            for start in range(0, len(rows), SLOT_CHUNK):
                db.execute(
                    UPSERT, (msgspec.json.encode(rows[start : start + SLOT_CHUNK]).decode(),)
                )
            sqlite_receipts.write(db, packs)
            db.executemany(DELETE_RESERVATION, deletes)
            db.executemany(PUT_RESERVATION, puts)
            if not (receipts or reservations or window_ms):
                return 0  # a plain `write`: no expiry pass
            dropped = sqlite_receipts.expire(db, now_ms, len(packs))
            return dropped + db.execute(EXPIRE_RESERVATIONS, (now_ms, EXPIRE_BATCH)).rowcount

    async def write_changes(
        self,
        entries: Sequence[Entry],
        receipts: Sequence[ReceiptEntry],
        reservations: Sequence[ReservationEntry],
        window_ms: int,
        now_ms: int,
    ) -> int:
        async with self._lock:
            try:
                return await in_thread(
                    self._write_changes, entries, receipts, reservations, window_ms, now_ms
                )
            except sqlite3.Error as error:
                raise DurableError(f"sqlite write failed: {error}") from error

    async def write(self, entries: Sequence[Entry]) -> None:
        await self.write_changes(entries, (), (), 0, 0)

    async def load_pages(self, shards: Collection[int]) -> AsyncIterator[SlotPage]:
        """Pages of LOAD_PAGE rows at most (sqlite_slots.py), read in a worker thread one
        at a time, the next one while the caller takes this one; rows of other shards are
        skipped there (one pass over the table in key order)."""
        if not shards:
            return
        pages = SlotPages(self._db, frozenset(shards))
        reading = asyncio.ensure_future(self._read_page(pages, ""))
        try:
            while True:
                page, after = await reading
                if after is not None:  # read ahead: SQLite steps with the GIL released
                    reading = asyncio.ensure_future(self._read_page(pages, after))
                if page:
                    yield page
                if after is None:
                    return
        finally:
            if not reading.done():  # the caller stopped early: no read runs on unseen
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, DurableError):
                    await reading
            elif not reading.cancelled():
                reading.exception()  # a failed read ahead the caller never asked for

    async def _read_page(self, pages: SlotPages, after: str) -> tuple[SlotPage, str | None]:
        async with self._lock:
            try:
                return await in_thread(pages.page, after)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite load failed: {error}") from error

    async def load_slots(self, shards: Collection[int]) -> AsyncIterator[list[SlotRow]]:
        async for page in self.load_pages(shards):
            yield slot_rows(page)

    async def load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        return [pair async for page in self.load_slots(shards) for pair in states_of(page)]

    async def write_receipts(
        self, entries: Sequence[ReceiptEntry], window_ms: int, now_ms: int
    ) -> int:
        return await self.write_changes((), entries, (), window_ms, now_ms)

    def _receipt_page(
        self, shard: int, after: tuple[str, str], now_ms: int, keys: dict[str, Key]
    ) -> list[ReceiptEntry]:
        return sqlite_receipts.row_page(self._db, shard, after, now_ms, keys)

    async def load_receipts(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReceiptEntry]]:
        """The rows of the table written before packs, each shard paged in (counter,
        idempotency key) order from where the last page ended; then the packs, paged in id
        order, their receipts of these shards in pages of at most RECEIPT_PAGE. A receipt
        stored twice loads once, as first stored (as a row's INSERT OR IGNORE kept it)."""
        seen: set[tuple[Key, str]] = set()
        async for page in self._pages(self._receipt_page, shards, now_ms, "receipt"):
            seen.update((key, idem) for key, _, idem, _ in page)
            yield page
        wanted = frozenset(shards)
        keys: dict[Key, Key] = {}
        after: int | None = 0
        held: list[ReceiptEntry] = []
        while wanted and after is not None:
            async with self._lock:
                try:
                    found, after = await in_thread(
                        sqlite_receipts.pack_page, self._db, after, now_ms, wanted, keys
                    )
                except sqlite3.Error as error:
                    raise DurableError(f"sqlite receipt load failed: {error}") from error
            for entry in found:
                name = (entry[0], entry[2])
                if name not in seen:
                    seen.add(name)
                    held.append(entry)
            while len(held) >= RECEIPT_PAGE or (held and after is None):
                yield held[:RECEIPT_PAGE]
                held = held[RECEIPT_PAGE:]

    def _reservation_page(
        self, shard: int, after: tuple[str, str], now_ms: int, keys: dict[str, Key]
    ) -> list[ReservationEntry]:
        page: list[ReservationEntry] = []
        rows = self._db.execute(LOAD_RESERVATIONS, (shard, *after, now_ms, RECEIPT_PAGE))
        for counter, idem, node, token, until_ms in rows:
            key = keys.get(counter) or keys.setdefault(counter, key_of(counter))
            if not (isinstance(node, str) and isinstance(token, str) and node and token):
                raise DurableError(f"corrupt reservation of {idem!r} in sqlite")
            page.append((key, shard, idem, Reservation(node, token, int(until_ms))))
        return page

    async def load_reservations(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReservationEntry]]:
        """Pages each shard in (counter, idempotency key) order, as receipts are paged."""
        async for page in self._pages(self._reservation_page, shards, now_ms, "reservation"):
            yield page

    async def _pages(
        self,
        page_of: Callable[[int, tuple[str, str], int, dict[str, Key]], list[Paged]],
        shards: Collection[int],
        now_ms: int,
        what: str,
    ) -> AsyncIterator[list[Paged]]:
        """Each shard's pages of `page_of`, each starting after the last one's (counter,
        idempotency key); counters' keys parsed once for the whole load."""
        keys: dict[str, Key] = {}
        for shard in sorted(shards):
            after = ("", "")
            while True:
                async with self._lock:
                    try:
                        page = await in_thread(page_of, shard, after, now_ms, keys)
                    except sqlite3.Error as error:
                        raise DurableError(f"sqlite {what} load failed: {error}") from error
                if page:
                    yield page
                if len(page) < RECEIPT_PAGE:
                    break
                after = (member(page[-1][0]), page[-1][2])

    async def stored_shards(self) -> set[int]:
        """Every shard with a slot here, one index probe per shard (a skip scan)."""
        async with self._lock:
            try:
                rows = await in_thread(lambda: self._db.execute(STORED_SHARDS).fetchall())
            except sqlite3.Error as error:
                raise DurableError(f"sqlite shard list failed: {error}") from error
        return {shard for (shard,) in rows}

    async def forget_shard(self, shard: int) -> None:
        """Its slots, receipts and reservations (receipt packs hold no shard: they expire)."""
        async with self._lock:
            try:
                await in_thread(self._forget_shard, shard)
            except sqlite3.Error as error:
                raise DurableError(f"sqlite forget of shard {shard} failed: {error}") from error

    def _forget_shard(self, shard: int) -> None:
        with self._db as db:
            for table in ("slots", "idempotency_receipts", "reservations"):
                db.execute(f"DELETE FROM {table} WHERE shard = ?", (shard,))

    async def last_incarnation(self, node_id: str, current: int) -> int:
        """The incarnation file sits in the same data dir as this file: nothing to add."""
        return 0

    async def ping(self) -> None:
        """A local file is there as long as the node is."""

    async def close(self) -> None:
        async with self._lock:
            await in_thread(self._db.close)

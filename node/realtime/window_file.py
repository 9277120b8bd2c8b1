"""The window file: a node's own window buckets and observation state, kept in its data dir.

One SQLite file (`windows.sqlite3`), this node's alone and the same whether the durable
replica is SQLite or Redis. Per shard this node observes: its observation (coverage.py),
the time its rows were last written through (`through_ms`, P), and whether the file holds
every counter's value as of P (`whole`: restorable); per (counter, minute) the net change
observed; per counter the value the change tap last handed on as of P (`afters`). Each write
adds what changed since the previous one in one transaction, so after a kill -9 the file
holds the state of its last write entirely or the previous one: buckets, afters and P
always agree. WAL with synchronous=NORMAL survives a killed process (not a power cut).

The sqlite3 module blocks: every method here runs in a worker thread, one at a time
(window_persist.py). A file that cannot be read is set aside (renamed `.bad`) and a new one
begun: nothing is restored from it, and the windows answer from their live cut, saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from node.base.keys import Key
from node.realtime.coverage import Observation
from node.storage.store_dirty import Change

FILE_NAME = "windows.sqlite3"
VERSION = 1
log = logging.getLogger("counters.realtime")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS observed (
    shard INTEGER PRIMARY KEY,
    since_ms INTEGER NOT NULL,
    gaps TEXT NOT NULL,
    through_ms INTEGER NOT NULL,
    whole INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets (
    shard INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    minute INTEGER NOT NULL,
    name TEXT NOT NULL,
    delta INTEGER NOT NULL,
    PRIMARY KEY (shard, tenant, namespace, minute, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS afters (
    shard INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (shard, tenant, namespace, name)
) WITHOUT ROWID;
"""
ADD_DELTA = (
    "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET delta = delta + excluded.delta"
)
PUT_AFTER = "INSERT OR REPLACE INTO afters VALUES (?, ?, ?, ?, ?)"
PUT_OBSERVED = "INSERT OR REPLACE INTO observed VALUES (?, ?, ?, ?, ?)"


class WindowFileError(Exception):
    """The window file could not be read or written."""


@dataclass(frozen=True)
class Stored:
    """A shard's observation as the file holds it."""

    observation: Observation
    through_ms: int
    whole: bool


Row = tuple[str, str, int, str, int]  # tenant, namespace, minute, name, delta


@dataclass
class Batch:
    """What one write adds: taken from the journal (window_persist.py) on the event loop."""

    deltas: dict[int, dict[Key, int]] = field(default_factory=dict)  # minute -> key -> delta
    # key -> the change tap's last change of it: its shard and its value after
    afters: dict[Key, Change] = field(default_factory=dict)
    observed: dict[int, Stored] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)  # shards whose rows go (before the rest)
    rewritten: dict[int, list[Row]] = field(default_factory=dict)  # shards' buckets anew
    oldest_minute: int = 0  # buckets before it go


@dataclass
class Loaded:
    """A shard's rows, read back for a restore."""

    buckets: dict[tuple[str, str], list[tuple[int, dict[str, int]]]]  # oldest first
    afters: dict[Key, int]


class WindowFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            db = _connect(self.path)
        except sqlite3.DatabaseError as error:
            log.warning("window file %s unreadable, set aside: %s", self.path, error)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").replace(f"{self.path}{suffix}.bad")
            db = _connect(self.path)
        return db

    def observations(self, oldest_ms: int) -> dict[int, Stored]:
        """Every shard's stored observation written through at or after oldest_ms."""
        try:
            rows = self.db.execute(
                "SELECT shard, since_ms, gaps, through_ms, whole FROM observed "
                "WHERE through_ms >= ?",
                (oldest_ms,),
            ).fetchall()
            return {
                shard: Stored(Observation(since, _gaps(gaps)), through, bool(whole))
                for shard, since, gaps, through, whole in rows
            }
        except (sqlite3.Error, ValueError, TypeError) as error:
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def load(self, shard: int) -> Loaded:
        try:
            buckets: dict[tuple[str, str], list[tuple[int, dict[str, int]]]] = {}
            rows = self.db.execute(
                "SELECT tenant, namespace, minute, name, delta FROM buckets WHERE shard = ? "
                "ORDER BY tenant, namespace, minute",
                (shard,),
            )
            for tenant, namespace, minute, name, delta in rows:
                minutes = buckets.setdefault((tenant, namespace), [])
                if not minutes or minutes[-1][0] != minute:
                    minutes.append((minute, {}))
                minutes[-1][1][name] = delta
            afters = {
                (tenant, namespace, name): value
                for tenant, namespace, name, value in self.db.execute(
                    "SELECT tenant, namespace, name, value FROM afters WHERE shard = ?", (shard,)
                )
            }
            return Loaded(buckets, afters)
        except sqlite3.Error as error:
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def write(self, batch: Batch) -> None:
        """One transaction: all of the batch or none of it."""
        try:
            with self.db:
                self._write(batch)
        except sqlite3.Error as error:
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def _write(self, batch: Batch) -> None:
        db = self.db
        for shard in batch.dropped:
            for table in ("observed", "buckets", "afters"):
                db.execute(f"DELETE FROM {table} WHERE shard = ?", (shard,))
        for shard, rows in batch.rewritten.items():
            db.execute("DELETE FROM buckets WHERE shard = ?", (shard,))
            db.executemany(ADD_DELTA, ((shard, *row) for row in rows))
        db.executemany(ADD_DELTA, _delta_rows(batch.deltas, batch.afters))
        db.executemany(
            PUT_AFTER, ((change[1], *key, change[3]) for key, change in batch.afters.items())
        )
        db.executemany(
            PUT_OBSERVED,
            (
                (shard, s.observation.since_ms, json.dumps(s.observation.gaps), s.through_ms,
                 int(s.whole))
                for shard, s in batch.observed.items()
            ),
        )  # fmt: skip
        if batch.oldest_minute:
            db.execute("DELETE FROM buckets WHERE minute < ?", (batch.oldest_minute,))

    def size_bytes(self) -> int:
        return sum(
            Path(f"{self.path}{suffix}").stat().st_size
            for suffix in ("", "-wal")
            if Path(f"{self.path}{suffix}").exists()
        )

    def close(self) -> None:
        self.db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('version', ?)", (VERSION,))
        elif row[0] != VERSION:
            raise sqlite3.DatabaseError(f"window file version {row[0]}, not {VERSION}")
        db.execute("SELECT count(*) FROM observed").fetchone()
    except BaseException:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # transactions again, one per `with db`
    return db


def _gaps(text: str) -> tuple[tuple[int, int], ...]:
    gaps = json.loads(text)
    if not isinstance(gaps, list):
        raise ValueError("gaps are a list")
    return tuple((int(low), int(high)) for low, high in gaps)


def _delta_rows(
    deltas: dict[int, dict[Key, int]], afters: dict[Key, Change]
) -> Iterable[tuple[int, str, str, int, str, int]]:
    """Bucket rows; a key with a delta has its last change in the same batch."""
    for minute, changed in deltas.items():
        for key, delta in changed.items():
            if delta:
                yield afters[key][1], key[0], key[1], minute, key[2], delta

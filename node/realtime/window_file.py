"""The window file: a node's own window buckets and observation state, kept in its data dir.

One SQLite file (`windows.sqlite3`), this node's alone and the same whether the durable
replica is SQLite or Redis. Per shard this node observes: its observation (coverage.py),
the time its rows were last written through (`through_ms`, P), and whether the file holds
every counter's value as of P (`whole`: restorable). Per (shard, tenant, namespace, minute)
the bucket, as one msgpack map (name -> change) of the whole bucket and, for the space's
newest minute written, a row per write of the entries it changed (`entries`: name -> the
entry's value then, so later rows win), so a write costs the packing of what changed since
the previous one (C speed), not of the buckets it touched nor a B-tree row per change. When
a space's write reaches a later minute, the earlier minute's rows are merged into its whole
row (a bucket stops changing once its space has a newer one: windows.py), so each bucket is
packed whole once and a space holds at most one minute of entry rows (a write a second: 60).
Per shard, a log of blobs of the values the change tap last handed on (tenant, namespace,
name, value, ...), one per write that changed the shard, later ones winning; merged into one
when it outgrows its last merge (COMPACT_SLACK), so a value costs O(1) to keep however often
its counter changes. A change or value past msgpack's range (a minute's swing from INT64_MAX
to INT64_MIN nets -(2^64 - 1)) is packed as an ext type (bigints.py), so one tenant's swing
cannot stop the file's writes; older files hold plain msgpack and read as before. Each write
is one transaction, so after a kill -9 the file holds its last write entirely or the previous
one: buckets, values and P always agree. WAL, synchronous=NORMAL: survives a kill, not a power cut.

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
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from node.base.keys import Key
from node.realtime.bigints import pack, unpack
from node.realtime.coverage import Observation
from node.storage.store_dirty import Change

FILE_NAME = "windows.sqlite3"
VERSION = 3  # 2: no bucket_entries table (opened and migrated: it is added)
log = logging.getLogger("counters.realtime")

# a shard's value log is merged into one blob once the values logged since its last
# merge outnumber the merged ones by this many: each merge's cost is paid by as many
# values written before it, and the log stays within twice its merged size plus this
COMPACT_SLACK = 4096
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
    deltas BLOB NOT NULL,
    PRIMARY KEY (shard, tenant, namespace, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bucket_entries (
    shard INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    minute INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (shard, tenant, namespace, minute, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS afters (
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    items BLOB NOT NULL,
    PRIMARY KEY (shard, seq)
) WITHOUT ROWID;
"""
PUT_BUCKET = "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?)"
PUT_OBSERVED = "INSERT OR REPLACE INTO observed VALUES (?, ?, ?, ?, ?)"
PUT_ENTRIES = "INSERT INTO bucket_entries VALUES (?, ?, ?, ?, ?, ?)"


class WindowFileError(Exception):
    """The window file could not be read or written."""


@dataclass(frozen=True)
class Stored:
    """A shard's observation as the file holds it."""

    observation: Observation
    through_ms: int
    whole: bool


Space = tuple[str, str]  # (tenant, namespace)
_first, _second = itemgetter(0), itemgetter(1)
SpaceKey = tuple[int, str, str]  # shard, tenant, namespace
BucketKey = tuple[int, str, str, int]  # shard, tenant, namespace, minute


@dataclass
class Batch:
    """What one write adds: taken from the journal (journal.py) on the event loop."""

    # copies, whole: a rewritten shard's, and those of which most entries changed
    buckets: dict[BucketKey, dict[str, int]] = field(default_factory=dict)
    # key -> the change tap's last change of it: its shard and its value after
    afters: dict[Key, Change] = field(default_factory=dict)
    observed: dict[int, Stored] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)  # shards whose rows go (before the rest)
    rewritten: set[int] = field(default_factory=set)  # shards whose buckets all go first
    oldest_minute: int = 0  # buckets before it go
    through_ms: int = 0  # every shard with a row is written through it (0: not said)
    # the entries changed since the last write: bucket -> name -> its value in the bucket now
    entries: dict[BucketKey, dict[str, int]] = field(default_factory=dict)


@dataclass
class Loaded:
    """A shard's rows, read back for a restore."""

    buckets: dict[Space, list[tuple[int, dict[str, int]]]]  # oldest first
    afters: dict[Space, dict[str, int]]  # per tenant and namespace: name -> value at P


def _pack_afters(changes: Iterable[Change]) -> bytes:
    """A value row of changes: per tenant and namespace, each counter's value after."""
    spaces: dict[Space, dict[str, int]] = {}
    for change in changes:
        tenant, namespace, name = change[0]
        spaces.setdefault((tenant, namespace), {})[name] = change[3]
    return _pack_spaces(spaces)


def _pack_spaces(spaces: dict[Space, dict[str, int]]) -> bytes:
    """A value row: tenant, namespace, name, value, ... grouped by tenant and namespace (a
    load takes each run of one in C: `_afters`)."""
    flat: list[str | int] = []
    for (tenant, namespace), names in spaces.items():
        for name, value in names.items():
            flat += (tenant, namespace, name, value)
    return pack(flat)


class WindowFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        # per shard: values logged since its log was last merged, and how many that left
        self._logged: dict[int, int] = {}
        self._merged: dict[int, int] = {}
        # the last row's sequence number; (shard, tenant, namespace) -> the minutes it has
        # entry rows of (one, but for a file a failed merge left otherwise), as committed:
        # read again after a failed write
        self._seq = 0
        self._entry_minutes: dict[SpaceKey, set[int]] | None = None
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        """The file, and what a write goes on from; one that cannot be read is set aside
        (every row must be readable: a new row's number must follow every older one's)."""
        try:
            db = _connect(self.path)
            self._seq, self._entry_minutes = _sequence(db), _entry_minutes(db)
        except sqlite3.DatabaseError as error:
            log.warning("window file %s unreadable, set aside: %s", self.path, error)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").replace(f"{self.path}{suffix}.bad")
            db = _connect(self.path)
            self._seq, self._entry_minutes = 0, {}
        return db

    def observations(self, oldest_ms: int) -> dict[int, Stored]:
        """Every shard's stored observation written through at or after oldest_ms: its row's
        time, or the file's when later (a write that said so covered every row)."""
        try:
            found = self.db.execute("SELECT value FROM meta WHERE name = 'through_ms'")
            through_all = (found.fetchone() or (0,))[0]
            rows = self.db.execute(
                "SELECT shard, since_ms, gaps, max(through_ms, ?), whole FROM observed "
                "WHERE max(through_ms, ?) >= ?",
                (through_all, through_all, oldest_ms),
            ).fetchall()
            return {
                shard: Stored(Observation(since, _gaps(gaps)), through, bool(whole))
                for shard, since, gaps, through, whole in rows
            }
        except (sqlite3.Error, ValueError, TypeError) as error:
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def load(self, shard: int) -> Loaded:
        """The shard's buckets and values; WindowFileError when unreadable."""
        try:
            buckets: dict[Space, list[tuple[int, dict[str, int]]]] = {}
            rows = self.db.execute(
                "SELECT tenant, namespace, minute, deltas FROM buckets WHERE shard = ? "
                "ORDER BY tenant, namespace, minute",
                (shard,),
            )
            for tenant, namespace, minute, packed in rows:
                buckets.setdefault((tenant, namespace), []).append((minute, _names(packed)))
            self._add_entries(shard, buckets)
            return Loaded(buckets, self._afters(shard))
        except (sqlite3.Error, ValueError, TypeError) as error:
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def _add_entries(
        self, shard: int, buckets: dict[Space, list[tuple[int, dict[str, int]]]]
    ) -> None:
        """The shard's entry rows over its whole buckets, in write order (later ones win)."""
        rows = self.db.execute(
            "SELECT tenant, namespace, minute, entries FROM bucket_entries WHERE shard = ? "
            "ORDER BY seq",
            (shard,),
        )
        for tenant, namespace, minute, packed in rows:
            entries = _names(packed)
            minutes = buckets.setdefault((tenant, namespace), [])
            bucket = next((b for m, b in minutes if m == minute), None)
            if bucket is None:
                minutes.append((minute, entries))
                minutes.sort(key=lambda item: item[0])
            else:
                bucket.update(entries)

    def _bucket(self, shard: int, tenant: str, namespace: str, minute: int) -> dict[str, int]:
        """One bucket as the file holds it: its whole row, then its entry rows in order."""
        bucket: dict[str, int] = {}
        row = self.db.execute(
            "SELECT deltas FROM buckets WHERE shard = ? AND tenant = ? AND namespace = ? "
            "AND minute = ?",
            (shard, tenant, namespace, minute),
        ).fetchone()
        if row is not None:
            bucket.update(_names(row[0]))
        for (packed,) in self.db.execute(
            "SELECT entries FROM bucket_entries WHERE shard = ? AND tenant = ? "
            "AND namespace = ? AND minute = ? ORDER BY seq",
            (shard, tenant, namespace, minute),
        ):
            bucket.update(_names(packed))
        return bucket

    def _afters(self, shard: int) -> dict[Space, dict[str, int]]:
        """The shard's value rows, later ones winning: per space, name -> value; a run of one
        space in a row taken by C code, not a Python loop per counter (a restore's million)."""
        afters: dict[Space, dict[str, int]] = {}
        rows = self.db.execute("SELECT items FROM afters WHERE shard = ? ORDER BY seq", (shard,))
        for (packed,) in rows:
            flat = unpack(packed)
            if not isinstance(flat, list) or len(flat) % 4:
                raise ValueError("a value row is a list of tenant, namespace, name, value")
            spaces = zip(flat[0::4], flat[1::4], strict=True)
            items = zip(spaces, zip(flat[2::4], flat[3::4], strict=True), strict=True)
            for space, run in groupby(items, key=_first):
                afters.setdefault(space, {}).update(map(_second, run))
        return afters

    def write(self, batch: Batch) -> None:
        """One transaction: all of the batch or none of it."""
        try:
            if self._entry_minutes is None:  # a write failed: read what its rollback left
                self._entry_minutes = _entry_minutes(self.db)
            with self.db:
                self._write(batch)
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            self._logged.clear()  # counted again from here: a merge only comes later
            self._entry_minutes = None
            raise WindowFileError(f"window file {self.path}: {error}") from error

    def _write(self, batch: Batch) -> None:
        db, known = self.db, self._entry_minutes
        assert known is not None  # read again by write() after a failed one
        for shard in batch.dropped:
            for table in ("observed", "buckets", "bucket_entries", "afters"):
                db.execute(f"DELETE FROM {table} WHERE shard = ?", (shard,))
            self._logged.pop(shard, None)
            self._merged.pop(shard, None)
        for shard in batch.rewritten:
            db.execute("DELETE FROM buckets WHERE shard = ?", (shard,))
            db.execute("DELETE FROM bucket_entries WHERE shard = ?", (shard,))
        if batch.dropped or batch.rewritten:
            gone = batch.dropped | batch.rewritten
            for space in [space for space in known if space[0] in gone]:
                del known[space]
        self._write_buckets(batch, known)
        by_shard: dict[int, list[Change]] = {}
        for change in batch.afters.values():
            by_shard.setdefault(change[1], []).append(change)
        for shard, changes in by_shard.items():
            self._seq += 1
            db.execute(
                "INSERT INTO afters VALUES (?, ?, ?)", (shard, self._seq, _pack_afters(changes))
            )
            logged = self._logged[shard] = self._logged.get(shard, 0) + len(changes)
            if logged > self._merged.get(shard, 0) + COMPACT_SLACK:
                self.compact(shard)
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
            db.execute("DELETE FROM bucket_entries WHERE minute < ?", (batch.oldest_minute,))
            for space, minutes in list(known.items()):
                minutes -= {m for m in minutes if m < batch.oldest_minute}
                if not minutes:
                    del known[space]
        if batch.through_ms:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('through_ms', ?)", (batch.through_ms,))

    def _write_buckets(self, batch: Batch, known: dict[SpaceKey, set[int]]) -> None:
        """Whole buckets replace their rows; entries add a row per bucket. Before a space's
        row of a minute, its entry rows of earlier minutes merge into their whole rows.
        Oldest minute first, so a write that spans a minute's end merges the earlier
        minute with its own row."""
        db = self.db
        wholes: list[tuple[int, str, str, int, bytes]] = []
        rows: list[tuple[int, str, str, int, int, bytes]] = []
        items = [(key, True, bucket) for key, bucket in batch.buckets.items()]
        items += [(key, False, entries) for key, entries in batch.entries.items()]
        items.sort(key=lambda item: item[0])
        for (shard, tenant, namespace, minute), whole, values in items:
            space = (shard, tenant, namespace)
            minutes = known.get(space)
            if minutes is None:
                minutes = known[space] = set()
            elif len(minutes) > 1 or minute not in minutes:  # rare: once a minute a space
                db.executemany(PUT_ENTRIES, rows)  # this write's rows of earlier minutes too
                rows = []
                for earlier in sorted(m for m in minutes if m < minute):
                    self._merge_entries(shard, tenant, namespace, earlier)
                    minutes.discard(earlier)
            if whole:
                if minute in minutes:  # its entry rows are in the whole row now
                    self._drop_entries(shard, tenant, namespace, minute)
                    minutes.discard(minute)
                wholes.append((shard, tenant, namespace, minute, pack(values)))
            else:
                minutes.add(minute)
                self._seq += 1
                rows.append((shard, tenant, namespace, minute, self._seq, pack(values)))
        db.executemany(PUT_BUCKET, wholes)
        db.executemany(PUT_ENTRIES, rows)

    def _merge_entries(self, shard: int, tenant: str, namespace: str, minute: int) -> None:
        bucket = self._bucket(shard, tenant, namespace, minute)
        self.db.execute(PUT_BUCKET, (shard, tenant, namespace, minute, pack(bucket)))
        self._drop_entries(shard, tenant, namespace, minute)

    def _drop_entries(self, shard: int, tenant: str, namespace: str, minute: int) -> None:
        self.db.execute(
            "DELETE FROM bucket_entries WHERE shard = ? AND tenant = ? AND namespace = ? "
            "AND minute = ?",
            (shard, tenant, namespace, minute),
        )

    def compact(self, shard: int) -> None:
        """The shard's value log as one blob: the latest value of each counter."""
        afters = self._afters(shard)
        self.db.execute("DELETE FROM afters WHERE shard = ?", (shard,))
        self._seq += 1
        packed = _pack_spaces(afters)
        self.db.execute("INSERT INTO afters VALUES (?, ?, ?)", (shard, self._seq, packed))
        self._logged[shard], self._merged[shard] = 0, sum(map(len, afters.values()))

    def blob_bytes(self) -> tuple[int, int]:
        """The bytes of the bucket blobs and of the value blobs (for benchmarks)."""
        buckets = self.db.execute(
            "SELECT coalesce((SELECT sum(length(deltas)) FROM buckets), 0) "
            "+ coalesce((SELECT sum(length(entries)) FROM bucket_entries), 0)"
        )
        afters = self.db.execute("SELECT coalesce(sum(length(items)), 0) FROM afters")
        return buckets.fetchone()[0], afters.fetchone()[0]

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
        elif row[0] == 2:  # the schema above added its one new table: nothing else changed
            db.execute("UPDATE meta SET value = ? WHERE name = 'version'", (VERSION,))
        elif row[0] != VERSION:
            raise sqlite3.DatabaseError(f"window file version {row[0]}, not {VERSION}")
        db.execute("SELECT count(*) FROM observed").fetchone()
    except BaseException:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # transactions again, one per `with db`
    return db


def _sequence(db: sqlite3.Connection) -> int:
    """The highest row number of the value log and the bucket entries."""
    row = db.execute(
        "SELECT max(coalesce((SELECT max(seq) FROM afters), 0), "
        "coalesce((SELECT max(seq) FROM bucket_entries), 0))"
    ).fetchone()
    return int(row[0])


def _entry_minutes(db: sqlite3.Connection) -> dict[SpaceKey, set[int]]:
    found: dict[SpaceKey, set[int]] = {}
    rows = db.execute("SELECT DISTINCT shard, tenant, namespace, minute FROM bucket_entries")
    for shard, tenant, namespace, minute in rows:
        found.setdefault((shard, tenant, namespace), set()).add(minute)
    return found


def _names(packed: bytes) -> dict[str, int]:
    """A bucket's row (whole, or its entries): a map of names to changes."""
    names = unpack(packed)
    if not isinstance(names, dict):
        raise ValueError("a bucket's row is a map of names to changes")
    return names


def _gaps(text: str) -> tuple[tuple[int, int], ...]:
    gaps = json.loads(text)
    if not isinstance(gaps, list):
        raise ValueError("gaps are a list")
    return tuple((int(low), int(high)) for low, high in gaps)

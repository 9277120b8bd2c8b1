"""SQLite in the data dir as the history store: the embedded default, nothing to install.

The same table and answers as PostgreSQL (history_pg.py), with times as unix seconds;
periods are cut in UTC by strftime. Each node's file holds only what that node recorded, so
in a cluster history_api.py asks every node for the rows that decide an answer (`compact`),
merges them into an in-memory SqliteHistory and asks that. The sqlite3 module blocks, so
each call runs in a worker thread. Writes and migrations take the one write connection, one
at a time; reads of a file take one of READERS read-only connections, so a long rollup holds
neither another tenant's read nor the recorder's writes (in WAL mode readers see the last
committed data and run beside the writer). An in-memory store has one connection for all.
A read running past read_timeout_s (READ_TIMEOUT_S, 10 s) is interrupted and raises
HistoryTimeout (503 history-unavailable): one request cannot hold a connection for ever.
Migrations run in BEGIN IMMEDIATE transactions, one per migration, so two processes opening
one file apply each once.
"""

from __future__ import annotations

import asyncio
import heapq
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from node.base.threads import in_thread
from node.history.model import (
    HistoryError,
    HistoryTimeout,
    Point,
    Rollup,
    Row,
    migrations,
    rollups_of,
)

T = TypeVar("T")
BUSY_TIMEOUT_S = 10.0  # how long a writer waits for another process's transaction
READERS = 4  # read-only connections of a file store: reads running at once
READ_TIMEOUT_S = 10.0  # how long one read may run before it is interrupted
PROGRESS_STEPS = 100_000  # SQLite VM steps between checks of a read's deadline (~ms)
MEMORY = ":memory:"
# strftime formats that cut a unix time down to the start of its minute, hour or day (UTC)
TRUNCATE = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}
PERIOD_OF_BUCKET = "CAST(strftime('%s', strftime(:format, bucket, 'unixepoch')) AS INTEGER)"

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
# Rows go in as one JSON array per write, read by json_each: one sqlite3_step for the lot,
# so the writing thread gives the GIL back once, not at every row as with executemany
# (where it fell behind a busy event loop). "WHERE true" keeps ON CONFLICT an upsert.
UPSERT = """
INSERT INTO counter_history (tenant, namespace, name, bucket, value, recorded_at, version)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6
FROM json_each(?) WHERE true
ON CONFLICT (tenant, namespace, name, bucket) DO UPDATE
SET value = excluded.value, recorded_at = excluded.recorded_at, version = excluded.version
WHERE (excluded.version, excluded.recorded_at)
   >= (counter_history.version, counter_history.recorded_at)
"""
# A counter's value per step and the value before the range; the deltas are taken in Python
# (series_of): in SQLite an integer subtraction past int64 turns into an inexact REAL.
SERIES = f"""
WITH steps AS (
    SELECT step, value FROM (
        SELECT {PERIOD_OF_BUCKET} AS step, value,
               row_number() OVER (PARTITION BY {PERIOD_OF_BUCKET} ORDER BY bucket DESC) AS newest
        FROM counter_history
        WHERE tenant = :tenant AND namespace = :namespace AND name = :name
          AND bucket >= :start AND bucket < :end
    ) WHERE newest = 1
)
SELECT step, value, (
    SELECT value FROM counter_history
    WHERE tenant = :tenant AND namespace = :namespace AND name = :name AND bucket < :start
    ORDER BY bucket DESC LIMIT 1
) AS before
FROM steps ORDER BY step
"""
# each counter's newest value per period in range
PERIODS = f"""
periods AS (
    SELECT name, period, value FROM (
        SELECT name, {PERIOD_OF_BUCKET} AS period, value,
               row_number() OVER (
                   PARTITION BY name, {PERIOD_OF_BUCKET} ORDER BY bucket DESC
               ) AS newest
        FROM counter_history
        WHERE tenant = :tenant AND namespace = :namespace AND bucket >= :start AND bucket < :end
    ) WHERE newest = 1
)"""
ROLLUPS = f"""
WITH {PERIODS}, deltas AS (
    SELECT period, name,
           value - coalesce(lag(value) OVER (PARTITION BY name ORDER BY period), (
               SELECT h.value FROM counter_history AS h
               WHERE h.tenant = :tenant AND h.namespace = :namespace AND h.name = periods.name
                 AND h.bucket < :start
               ORDER BY h.bucket DESC LIMIT 1
           ), 0) AS delta
    FROM periods
), ranked AS (
    SELECT period, name, delta,
           sum(delta) OVER (PARTITION BY period) AS total,
           row_number() OVER (PARTITION BY period ORDER BY delta DESC, name) AS rank
    FROM deltas
)
SELECT period, total, name, delta FROM ranked WHERE rank <= :top ORDER BY period, rank
"""
# The same periods with each counter's value before the range, for rollups_exact: the ranked
# query's sum() raises "integer overflow" past int64, and a delta past it turns into a REAL.
ROLLUP_VALUES = f"""
WITH {PERIODS}
SELECT name, period, value,
       CASE WHEN row_number() OVER (PARTITION BY name ORDER BY period) = 1 THEN (
           SELECT h.value FROM counter_history AS h
           WHERE h.tenant = :tenant AND h.namespace = :namespace AND h.name = periods.name
             AND h.bucket < :start
           ORDER BY h.bucket DESC LIMIT 1
       ) END AS before
FROM periods ORDER BY name, period
"""
# The rows an answer depends on: the newest per (counter, period) in range, and the newest
# before it per counter. Merging these from every node answers like merging every row.
COMPACT = f"""
SELECT name, bucket, value, recorded_at, version FROM (
    SELECT name, bucket, value, recorded_at, version,
           row_number() OVER (PARTITION BY name, {PERIOD_OF_BUCKET} ORDER BY bucket DESC) AS newest
    FROM counter_history
    WHERE tenant = :tenant AND namespace = :namespace {{name_filter}}
      AND bucket >= :start AND bucket < :end
) WHERE newest = 1
UNION ALL
SELECT name, max(bucket), value, recorded_at, version
FROM counter_history
WHERE tenant = :tenant AND namespace = :namespace {{name_filter}} AND bucket < :start
GROUP BY name
"""


def _statements(sql: str) -> list[str]:
    """A migration script as single statements (executescript would commit our transaction)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    if any(line.strip() and not line.strip().startswith("--") for line in current.splitlines()):
        raise ValueError(f"unterminated statement in a migration: {current.strip()[:80]!r}")
    return statements


class SqliteHistory:
    def __init__(self, path: Path | str, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.name = "sqlite"
        self._read_timeout_s = read_timeout_s
        self._memory = str(path) == MEMORY
        if not self._memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._read_only_uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        if not self._memory:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = asyncio.Lock()
        self._migrated = False
        self._idle_readers: list[sqlite3.Connection] = []  # opened on demand, up to READERS
        self._reader_slots = asyncio.Semaphore(READERS)
        self._closed = False

    async def _call(
        self, what: str, function: Callable[..., T], *args: Any, migrated: bool = True
    ) -> T:
        async with self._lock:
            try:
                if migrated and not self._migrated:
                    await in_thread(self._apply_all)
                return await in_thread(function, *args)
            except sqlite3.Error as error:
                raise HistoryError(f"sqlite {what} failed: {error}") from error

    async def _read(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """function(*args, connection) on a read-only connection of its own, within the time
        limit; in memory, on the one connection under the lock."""
        if self._memory:
            return await self._call(what, self._limited, what, self._db, function, *args)
        if not self._migrated:
            await self.migrate()
        async with self._reader_slots:
            try:
                idle = self._idle_readers
                db = idle.pop() if idle else await in_thread(self._open_reader)
                try:
                    return await in_thread(self._limited, what, db, function, *args)
                finally:
                    self._idle_readers.append(db)
            except sqlite3.Error as error:
                raise HistoryError(f"sqlite {what} failed: {error}") from error

    def _open_reader(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return sqlite3.connect(
            self._read_only_uri,
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_S,
        )

    def _limited(
        self, what: str, db: sqlite3.Connection, function: Callable[..., T], *args: Any
    ) -> T:
        """function(*args, db), interrupted once it runs past read_timeout_s."""
        deadline = time.monotonic() + self._read_timeout_s
        db.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            return function(*args, db)
        except sqlite3.OperationalError as error:
            if "interrupted" not in str(error):  # only the progress handler interrupts
                raise
            limit = self._read_timeout_s
            raise HistoryTimeout(f"sqlite {what} ran past {limit:g} s and was stopped") from error
        finally:
            db.set_progress_handler(None, 0)

    async def migrate(self) -> list[int]:
        return await self._call("migration", self._apply_all, migrated=False)

    def _apply_all(self) -> list[int]:
        applied = []
        for migration in migrations("sqlite"):
            self._db.execute("BEGIN IMMEDIATE")  # the write lock, before reading what is done
            try:
                self._db.execute(MIGRATIONS_TABLE)
                done = self._db.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done is None:
                    for statement in _statements(migration.sql):
                        self._db.execute(statement)
                    self._db.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        (migration.version, migration.name),
                    )
                    applied.append(migration.version)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._migrated = True
        return applied

    def _write(self, rows: Sequence[Row]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            # in key order: neighbouring rows share B-tree pages
            self._db.execute(UPSERT, (msgspec.json.encode(sorted(rows)).decode(),))

    async def write(self, rows: Sequence[Row]) -> None:
        if rows:
            await self._call("write", self._write, rows)

    def _fetch(
        self, query: str, parameters: dict[str, Any], db: sqlite3.Connection | None = None
    ) -> list[Any]:
        """The rows of query on db (a read connection), else on the write connection."""
        return (db or self._db).execute(query, parameters).fetchall()

    async def series(
        self, tenant: str, namespace: str, name: str, step: str, start: int, end: int
    ) -> list[Point]:
        parameters: dict[str, Any] = {"tenant": tenant, "namespace": namespace, "name": name}
        parameters.update(format=TRUNCATE[step], start=start, end=end)
        rows = await self._read("history query", self._fetch, SERIES, parameters)
        return series_of(rows)

    async def rollups(
        self, tenant: str, namespace: str, period: str, start: int, end: int, top: int
    ) -> list[Rollup]:
        parameters: dict[str, Any] = {"tenant": tenant, "namespace": namespace}
        parameters["format"] = TRUNCATE[period]
        parameters.update(start=start, end=end, top=top)
        return await self._read("rollup query", self._rollups, parameters)

    def _rollups(self, parameters: dict[str, Any], db: sqlite3.Connection) -> list[Rollup]:
        """The ranked query, or where a sum or a delta leaves int64, rollups_exact."""
        try:
            rows = self._fetch(ROLLUPS, parameters, db)
        except sqlite3.OperationalError as error:
            if "integer overflow" not in str(error):
                raise
        else:
            if not any(
                isinstance(total, float) or isinstance(delta, float) for _, total, _, delta in rows
            ):
                return rollups_of(rows)
        return rollups_exact(self._fetch(ROLLUP_VALUES, parameters, db), parameters["top"])

    async def compact(
        self, tenant: str, namespace: str, name: str | None, step: str, start: int, end: int
    ) -> list[tuple[str, int, int, float, int]]:
        """(name, bucket, value, recorded_at, version) of the rows that decide series and rollups of
        this step over [start, end): see COMPACT."""
        query = COMPACT.format(name_filter="AND name = :name" if name is not None else "")
        parameters: dict[str, Any] = {"tenant": tenant, "namespace": namespace, "name": name}
        parameters.update(format=TRUNCATE[step], start=start, end=end)
        rows = await self._read("history query", self._fetch, query, parameters)
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def ping(self) -> None:
        """A local file is there as long as the node is."""

    async def close(self) -> None:
        async with self._lock:
            for _ in range(READERS):  # every read has given its connection back
                await self._reader_slots.acquire()
            self._closed = True
            for db in self._idle_readers:
                await in_thread(db.close)
            self._idle_readers.clear()
            await in_thread(self._db.close)
            for _ in range(READERS):
                self._reader_slots.release()


def series_of(rows: Sequence[tuple[int, int, int | None]]) -> list[Point]:
    """(step, value, the value before the range) rows as points with exact deltas."""
    out: list[Point] = []
    for step_at, value, before in rows:
        previous = out[-1][1] if out else (before or 0)
        out.append((step_at, value, value - previous))
    return out


def rollups_exact(rows: Sequence[tuple[str, int, int, int | None]], top: int) -> list[Rollup]:
    """What ROLLUPS answers, in Python's integers: (name, period, value, the value before the
    range on a counter's first row) rows in (name, period) order."""
    totals: dict[int, int] = {}
    changes: dict[int, list[tuple[int, str]]] = {}
    current, previous = None, 0
    for name, period, value, before in rows:
        if name != current:
            current, previous = name, before or 0
        delta, previous = value - previous, value
        totals[period] = totals.get(period, 0) + delta
        changes.setdefault(period, []).append((-delta, name))
    return [
        (
            period,
            totals[period],
            [(name, -d) for d, name in heapq.nsmallest(top, changes[period]) if d < 0],
        )
        for period in sorted(totals)
    ]

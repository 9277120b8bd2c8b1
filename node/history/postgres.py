"""PostgreSQL as the history store, shared by every node of the cluster.

Writes COPY a batch into a session temp table and upsert it into counter_history in one
transaction, keeping per (counter, bucket) the value recorded last. Migrations run under a
transaction-scoped advisory lock, one transaction per migration, and are recorded in
schema_migrations, so nodes starting together apply each migration exactly once. Periods are
cut in UTC (date_trunc's time zone argument), whatever the session's time zone.

The pool connects lazily and reconnects by itself, so a node starts while PostgreSQL is down
and its writes resume when it returns; every failure surfaces as HistoryError, and as
HistoryTimeout when an operation outlasts the timeout (which a smaller write may not). A
call that finds the tables gone, from a PostgreSQL that came back empty (rebuilt, a
failover to a fresh instance), runs the migrations again and retries once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

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
log = logging.getLogger("counters.history")
MIGRATION_LOCK = 0x636F756E74657273  # "counters": one migrator at a time, cluster-wide
# Seconds a connect, a pool checkout, and each operation as a whole (a write's transaction,
# a query, a ping) may take (--postgres-timeout-s): a PostgreSQL that stops answering fails
# the call, so the recorder buffers and says so, instead of hanging on it.
TIMEOUT_S = 10.0
MAX_CONNECTIONS = 4
# Rows per COPY of a write: asyncpg encodes a COPY's rows without yielding to the event loop
# (100,000 rows held it 0.3 s), so a write sends its batch in parts, in one transaction.
COPY_CHUNK = 10_000
ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS counter_history_incoming
(LIKE counter_history) ON COMMIT DELETE ROWS
"""
COLUMNS = ("tenant", "namespace", "name", "bucket", "value", "recorded_at", "version")
UPSERT = """
INSERT INTO counter_history AS h (tenant, namespace, name, bucket, value, recorded_at, version)
SELECT DISTINCT ON (tenant, namespace, name, bucket)
       tenant, namespace, name, bucket, value, recorded_at, version
FROM counter_history_incoming
ORDER BY tenant, namespace, name, bucket, version DESC, recorded_at DESC
ON CONFLICT (tenant, namespace, name, bucket) DO UPDATE
SET value = excluded.value, recorded_at = excluded.recorded_at, version = excluded.version
WHERE (excluded.version, excluded.recorded_at) >= (h.version, h.recorded_at)
"""
# $1 tenant, $2 namespace, $3 name, $4 step, $5 start, $6 end
SERIES = """
WITH steps AS (
    SELECT DISTINCT ON (1) date_trunc($4::text, bucket, 'UTC') AS step, value
    FROM counter_history
    WHERE tenant = $1 AND namespace = $2 AND name = $3 AND bucket >= $5 AND bucket < $6
    ORDER BY 1, bucket DESC
), before AS (
    SELECT value FROM counter_history
    WHERE tenant = $1 AND namespace = $2 AND name = $3 AND bucket < $5
    ORDER BY bucket DESC LIMIT 1
)
SELECT step, value,
       value::numeric - coalesce(lag(value) OVER (ORDER BY step), (SELECT value FROM before), 0)
       AS delta
FROM steps ORDER BY step
"""
# $1 tenant, $2 namespace, $3 period, $4 start, $5 end, $6 top
ROLLUPS = """
WITH periods AS (
    SELECT DISTINCT ON (name, 2) name, date_trunc($3::text, bucket, 'UTC') AS period, value
    FROM counter_history
    WHERE tenant = $1 AND namespace = $2 AND bucket >= $4 AND bucket < $5
    ORDER BY name, 2, bucket DESC
), before AS (
    SELECT names.name, last.value
    FROM (SELECT DISTINCT name FROM periods) AS names
    CROSS JOIN LATERAL (
        SELECT value FROM counter_history AS h
        WHERE h.tenant = $1 AND h.namespace = $2 AND h.name = names.name AND h.bucket < $4
        ORDER BY h.bucket DESC LIMIT 1
    ) AS last
), deltas AS (
    SELECT p.period, p.name,
           p.value::numeric
           - coalesce(lag(p.value) OVER (PARTITION BY p.name ORDER BY p.period), b.value, 0)
           AS delta
    FROM periods AS p LEFT JOIN before AS b USING (name)
), ranked AS (
    SELECT period, name, delta,
           sum(delta) OVER (PARTITION BY period) AS total,
           row_number() OVER (PARTITION BY period ORDER BY delta DESC, name COLLATE "C") AS rank
    FROM deltas
)
SELECT period, total, name, delta FROM ranked WHERE rank <= $6 ORDER BY period, rank
"""


# 10000-01-01, the end of the range the API takes (an exclusive bound), is past datetime's
# range: its last microsecond before bounds the same whole-second buckets.
END_OF_TIME_S = 253402300800
LAST_MOMENT = datetime.max.replace(tzinfo=UTC)


def _time(seconds: float) -> datetime:
    return LAST_MOMENT if seconds >= END_OF_TIME_S else datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


class PgHistory:
    def __init__(
        self, dsn: str, *, max_connections: int = MAX_CONNECTIONS, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.name = "postgres"
        self.timeout_s = timeout_s
        self._dsn = dsn
        self._max_connections = max_connections
        self._pool: Any = None
        self._migrated = False

    async def _with_connection(
        self, what: str, operation: Callable[[Any], Awaitable[T]], *, migrated: bool = True
    ) -> T:
        try:
            if self._pool is None:
                # min_size=0: creating the pool connects nowhere, so it works while PG is down
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_connections,
                    timeout=self.timeout_s,
                    command_timeout=self.timeout_s,
                )
            if migrated and not self._migrated:
                await self._migrate()
            try:
                return await self._run(what, operation)
            except asyncpg.UndefinedTableError:
                if not migrated:
                    raise
                # the server came back without the schema: migrate it again, and retry once
                self._migrated = False
                applied = await self._migrate()
                log.warning("history postgres: tables missing; applied migrations %s", applied)
                return await self._run(what, operation)
        except ERRORS as error:
            text = str(error) or type(error).__name__  # a timeout's own text is empty
            raise HistoryError(f"postgres {what} failed: {text}") from error

    async def _run(self, what: str, operation: Callable[[Any], Awaitable[T]]) -> T:
        async with self._pool.acquire(timeout=self.timeout_s) as connection:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await operation(connection)
            except TimeoutError:  # the operation's own, not a connect's or a checkout's
                raise HistoryTimeout(
                    f"postgres {what} failed: took over {self.timeout_s:g} s"
                ) from None

    async def migrate(self) -> list[int]:
        return await self._with_connection("migration", self._apply_all, migrated=False)

    async def _migrate(self) -> list[int]:
        async with self._pool.acquire(timeout=self.timeout_s) as connection:
            async with asyncio.timeout(self.timeout_s):
                return await self._apply_all(connection)

    async def _apply_all(self, connection: Any) -> list[int]:
        applied = []
        for migration in migrations("postgres"):
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await connection.execute(MIGRATIONS_TABLE)
                done = await connection.fetchval(
                    "SELECT count(*) FROM schema_migrations WHERE version = $1", migration.version
                )
                if done:
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
        self._migrated = True
        return applied

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        # A write's rows share a few buckets and flush times: a datetime each, not two per
        # row (building 100,000 rows so held the event loop 0.8 s).
        times: dict[float, datetime] = {}

        def time_of(seconds: float) -> datetime:
            moment = times.get(seconds)
            if moment is None:
                moment = times[seconds] = _time(seconds)
            return moment

        records = [
            (tenant, namespace, name, time_of(bucket), value, time_of(at), version)
            for tenant, namespace, name, bucket, value, at, version in rows
        ]

        async def upsert(connection: Any) -> None:
            async with connection.transaction():
                await connection.execute(INCOMING)
                for start in range(0, len(records), COPY_CHUNK):
                    await connection.copy_records_to_table(
                        "counter_history_incoming",
                        records=records[start : start + COPY_CHUNK],
                        columns=COLUMNS,
                    )
                await connection.execute(UPSERT)

        await self._with_connection("write", upsert)

    async def series(
        self, tenant: str, namespace: str, name: str, step: str, start: int, end: int
    ) -> list[Point]:
        async def query(connection: Any) -> list[Any]:
            args = (tenant, namespace, name, step, _time(start), _time(end))
            return list(await connection.fetch(SERIES, *args))

        rows = await self._with_connection("history query", query)
        return [(_seconds(step_at), value, int(delta)) for step_at, value, delta in rows]

    async def rollups(
        self, tenant: str, namespace: str, period: str, start: int, end: int, top: int
    ) -> list[Rollup]:
        async def query(connection: Any) -> list[Any]:
            args = (tenant, namespace, period, _time(start), _time(end), top)
            return list(await connection.fetch(ROLLUPS, *args))

        rows = await self._with_connection("rollup query", query)
        return rollups_of(
            [(_seconds(at), int(total), name, int(delta)) for at, total, name, delta in rows]
        )

    async def ping(self) -> None:
        async def select_one(connection: Any) -> None:
            await connection.fetchval("SELECT 1")

        await self._with_connection("ping", select_one, migrated=False)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.timeout_s)
        except (*ERRORS, TimeoutError):
            pool.terminate()

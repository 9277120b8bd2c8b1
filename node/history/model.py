"""The history's model: rows, series points and rollups, the store interface, migrations.

Writes are upserts on (tenant, namespace, name, bucket) that keep the value of the later
counter state: the higher `version` (crdt/packed.py: the sum of every slot's increments and
decrements, which grows with every change and is the same whatever node computes it), then
the later `recorded_at` among equal versions. So a retried or repeated write changes nothing,
and two nodes that both recorded a bucket while the coordinator moved keep the fresher value,
whatever their clocks say and even when the new coordinator's replica lagged.

Two stores share the HistoryStore interface: PostgreSQL (postgres.py), shared by the whole
cluster, and SQLite in the data dir (sqlite.py), the embedded default, where each node keeps
what it recorded itself (node/http/history.py gathers the nodes' rows to answer). Schema
migrations ship in node/history/sql/ as NNNN_name.<dialect>.sql.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

# tenant, namespace, name, bucket start (unix s), value, recorded_at (unix s), version (int64:
# a version past it is stored as its largest value, where recorded_at decides alone)
Row = tuple[str, str, str, int, int, float, int]
# step start (unix s), the last value in the step, its change since the previous step
Point = tuple[int, int, int]
# period start (unix s), the namespace's total change, the top counters as (name, increase)
Rollup = tuple[int, int, list[tuple[str, int]]]

STEP_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.(postgres|sqlite)\.sql")


class HistoryError(Exception):
    """The history store could not be reached or failed."""


class HistoryTimeout(HistoryError):
    """The history store did not finish in time; a smaller write might."""


def bucket_of(now: float, bucket_s: int) -> int:
    """The start (unix seconds) of the bucket holding `now`."""
    return int(now // bucket_s) * bucket_s


def iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 in UTC, e.g. 2024-05-01T12:00:00Z."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def rollups_of(rows: Sequence[tuple[int, int, str, int]]) -> list[Rollup]:
    """Group ranked (period, total, name, delta) rows; only increases count as top."""
    out: list[Rollup] = []
    for period, total, name, delta in rows:
        if not out or out[-1][0] != period:
            out.append((period, total, []))
        if delta > 0:
            out[-1][2].append((name, delta))
    return out


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The shipped migrations of one dialect (postgres, sqlite), oldest first."""
    found: dict[int, Migration] = {}
    for entry in importlib.resources.files("node.history").joinpath("sql").iterdir():
        match = MIGRATION_FILE.fullmatch(entry.name)
        if match is None or match[3] != dialect:
            continue
        version = int(match[1])
        if version in found:
            raise RuntimeError(f"two {dialect} migrations have version {version}")
        found[version] = Migration(version, match[2], entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


class HistoryStore(Protocol):
    name: str

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; returns their versions. Safe to run from
        many nodes at once."""

    async def write(self, rows: Sequence[Row]) -> None:
        """Upsert rows; a row replaces a stored one only if its (version, recorded_at) is no
        lower."""

    async def series(
        self, tenant: str, namespace: str, name: str, step: str, start: int, end: int
    ) -> list[Point]:
        """One point per step holding buckets in [start, end): the last value, and its
        change since the previous point (the first: since the last value before start, or
        since zero)."""

    async def rollups(
        self, tenant: str, namespace: str, period: str, start: int, end: int, top: int
    ) -> list[Rollup]:
        """Per period holding buckets in [start, end): the sum of the namespace's counters'
        changes, and the `top` counters that increased most (ties by name)."""

    async def ping(self) -> None:
        """Raise HistoryError unless the store answers."""

    async def close(self) -> None: ...

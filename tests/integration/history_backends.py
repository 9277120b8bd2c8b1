"""What the history tests share: the two backends, how to open one, and a fixed UTC clock.

SQLite lives in the test's tmp_path; PostgreSQL is the session's `postgres_server` (see
conftest.py), shared by every test, so each test writes its own namespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.history.model import HistoryStore
from node.history.postgres import PgHistory
from node.history.sqlite import SqliteHistory
from tests.integration.postgres_server import PostgresServer

BACKENDS = ["sqlite", "postgres"]
TENANT = "default"
DAY0 = 1_700_006_400  # 2023-11-15T00:00:00Z, a UTC midnight
HOUR, DAY = 3600, 86400


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> HistoryStore:
    if kind == "sqlite":
        return SqliteHistory(tmp_path / "history.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return PgHistory(server.dsn)

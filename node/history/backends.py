"""Picks the history store's backend from the configuration, apart from the interface."""

from __future__ import annotations

from node.base.config import Config
from node.history.model import HistoryStore
from node.history.sqlite import SqliteHistory


def open_history(config: Config) -> HistoryStore:
    """PostgreSQL when a URL is given, else SQLite in the data dir. asyncpg is imported
    only then: an embedded node does not pay for it at every start."""
    if config.postgres_url:
        from node.history.postgres import PgHistory

        return PgHistory(config.postgres_url, timeout_s=config.postgres_timeout_s)
    return SqliteHistory(config.data_path / "history.sqlite3")

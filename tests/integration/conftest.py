"""Session-wide throwaway servers for integration tests, and the history store on each backend.

Each server starts the first time a test asks for it and stops when the session ends, whether
the tests passed or not. A server that cannot start fails the tests that need it, loudly: a
missing binary or a crashed start is a broken machine, never a reason to skip.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.history.model import HistoryStore
from tests.integration.history_backends import BACKENDS, open_store
from tests.integration.postgres_server import PostgresServer
from tests.integration.redis_servers import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone Redis that keeps nothing on disk; tests share it, so use unique keys."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters, no replicas, every slot assigned."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL with a `counters` database, reached through `.dsn` (trust auth)."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    """A history store on each backend in turn: SQLite in tmp_path, the session's PostgreSQL."""
    opened = open_store(request.param, tmp_path, request)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own, since the servers are shared by the session."""
    return "ns-" + uuid.uuid4().hex[:12]

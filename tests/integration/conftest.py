"""Session-wide throwaway servers for integration tests.

Each server starts the first time a test asks for it and stops when the session ends, whether
the tests passed or not. A server that cannot start fails the tests that need it, loudly: a
missing binary or a crashed start is a broken machine, never a reason to skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import PostgresServer, RedisCluster, RedisServer


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

"""What every test in the run shares: strict asyncio, and one of each throwaway server.

- tests/support/asyncio_leaks.py fails a test that let a task's or future's exception go
  unretrieved; pytester lets a test run pytest on an inner test (see tests/test_support.py).
- `redis_server`, `redis_cluster` and `postgres_server` are session-wide: each starts the
  first time a test asks for it and stops when the run ends, whatever the outcome, so a full
  run starts at most one of each. A server that cannot start fails the tests that need it,
  loudly: a missing binary or a crashed start is a broken machine, never a reason to skip.
  Since the servers are shared, every test keeps to keys, namespaces or a database of its
  own (`postgres_database`); a test that must stop, kill or reconfigure its server (AOF,
  outages of its own) starts a private one from tests/integration/ instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.postgres_server import PostgresServer
    from tests.integration.redis_servers import RedisCluster, RedisServer

pytest_plugins = ["pytester", "tests.support.asyncio_leaks"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone Redis that keeps nothing on disk; tests share it, so use unique keys."""
    from tests.integration.redis_servers import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters, no replicas, every slot assigned; use unique keys."""
    from tests.integration.redis_servers import RedisCluster

    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL with a `counters` database, reached through `.dsn` (trust auth).
    Tests that write to `counters` keep to a namespace of their own."""
    from tests.integration.postgres_server import PostgresServer

    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database of this test's own in the session's PostgreSQL, for
    tests that migrate a schema or write fixed namespaces. It is left in place: dropping it
    at teardown would cut off nodes that a later-torn-down fixture still runs."""
    return postgres_server.create_database("test_" + uuid.uuid4().hex[:12])

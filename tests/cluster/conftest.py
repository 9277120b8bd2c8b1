"""Fixtures for cluster tests: a Cluster of real node processes, torn down after each test.

Teardown fails the test when a node exited non-zero or logged an error or a traceback
(see Cluster.assert_clean and tests/cluster/node_logs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.integration.redis_servers import RedisServer


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as session:
        harness = Cluster(tmp_path, session)
        try:
            yield harness
        finally:
            await harness.stop()
        harness.assert_clean()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own that keeps what it acknowledged across kill -9 and restarts
    (AOF, fsync always), for tests that stop, pause or kill it. Take it before `cluster` in
    the test's arguments, so the nodes stop before it does."""
    options = {"appendonly": "yes", "appendfsync": "always"}
    with RedisServer(tmp_path / "redis", options=options) as server:
        yield server

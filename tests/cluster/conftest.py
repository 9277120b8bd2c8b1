"""Fixtures for cluster tests: a Cluster of real node processes, torn down after each test.

Teardown fails the test when a node exited non-zero or logged an error or a traceback
(see Cluster.assert_clean and tests/cluster/node_logs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as session:
        harness = Cluster(tmp_path, session)
        try:
            yield harness
        finally:
            await harness.stop()
        harness.assert_clean()

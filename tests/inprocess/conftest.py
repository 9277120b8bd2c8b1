"""The in-process cluster fixture: started by the test, closed (and checked) after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.inprocess.cluster import InProcessCluster


@pytest.fixture
async def inproc(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    cluster = InProcessCluster(tmp_path, seed=1)
    try:
        yield cluster
    finally:
        await cluster.close()

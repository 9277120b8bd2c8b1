"""The history store on each backend, and a namespace per test.

The session's Redis, Redis Cluster and PostgreSQL are fixtures of tests/conftest.py, shared
by the whole run; these tests keep to keys and namespaces of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.history.model import HistoryStore
from tests.integration.history_backends import BACKENDS, open_store


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

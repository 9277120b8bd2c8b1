"""The history HTTP API on its own: the times it accepts, and 503 while PostgreSQL is down."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.base.config import Config
from node.base.errors import InvalidBody
from node.cluster.membership import Cluster
from node.history.postgres import PgHistory
from node.history.recorder import Recorder
from node.http import history as history_api
from node.http import middleware
from node.http.appkeys import CLUSTER, CONFIG, HISTORY, RATE_LIMITER
from node.http.history import parse_time
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from node.storage.store import CounterStore
from tests.integration.history_backends import DAY0


def test_times_parse_as_iso_8601_or_unix_seconds() -> None:
    assert parse_time("1700006400", "from") == DAY0
    assert parse_time("1700006400.5", "from") == DAY0 + 0.5
    assert parse_time("2023-11-15T00:00:00Z", "from") == DAY0
    assert parse_time("2023-11-15", "from") == DAY0  # no offset: UTC
    assert parse_time("2023-11-15T02:00:00+02:00", "from") == DAY0
    assert parse_time("2023-11-15T02:00:00 02:00", "from") == DAY0  # "+" unescaped in a URL
    for bad in ["", "yesterday", "nan", "inf", "-1", "1e20", "2023-13-01"]:
        with pytest.raises(InvalidBody):
            parse_time(bad, "from")


async def test_api_answers_503_while_postgres_is_unreachable(tmp_path: Path) -> None:
    config = Config(
        node_id="solo", data_dir=str(tmp_path), postgres_url="postgresql://x@127.0.0.1:1/x"
    )
    app = web.Application(middlewares=[middleware.edge(Metrics(), None)])
    app[CONFIG] = config
    app[RATE_LIMITER] = RateLimiter(config)
    app[CLUSTER] = Cluster(config, 1)
    history = PgHistory(config.postgres_url)
    app[HISTORY] = Recorder(
        CounterStore(lambda key: 0), history, lambda shard: True, flush_interval_s=10, bucket_s=60
    )
    app.add_routes(history_api.routes)
    async with TestClient(TestServer(app)) as client:
        for path in ["/v1/namespaces/ns/counters/c/history", "/v1/namespaces/ns/rollups"]:
            response = await client.get(path)
            body = await response.json(content_type=None)
            assert response.status == 503 and body["type"].endswith("history-unavailable"), body
        response = await client.get("/v1/namespaces/ns/counters/c/history?step=year")
        assert response.status == 400
    await history.close()

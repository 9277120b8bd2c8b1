"""The history HTTP API on its own: the times it accepts, the ends of its range on either
store, and 503 while PostgreSQL is down."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.base.config import Config
from node.base.errors import InvalidBody
from node.cluster.membership import Cluster
from node.history.model import HistoryStore
from node.history.postgres import PgHistory
from node.history.recorder import Recorder
from node.http import history as history_api
from node.http import middleware
from node.http.appkeys import CLUSTER, CONFIG, HISTORY, RATE_LIMITER
from node.http.history import parse_time
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from node.storage.store import CounterStore
from tests.integration.history_backends import BACKENDS, DAY0, TENANT, open_store


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


def history_app(config: Config, store: HistoryStore) -> web.Application:
    """The history routes alone, for one node, over `store`."""
    app = web.Application(middlewares=[middleware.edge(Metrics(), None)])
    app[CONFIG] = config
    app[RATE_LIMITER] = RateLimiter(config)
    app[CLUSTER] = Cluster(config, 1)
    app[HISTORY] = Recorder(
        CounterStore(lambda key: 0), store, lambda shard: True, flush_interval_s=10, bucket_s=60
    )
    app.add_routes(history_api.routes)
    return app


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("query", ["to=253402300799.5", "to=9999-12-31T23:59:59.5Z"])
async def test_a_range_to_the_last_second_of_9999_is_answered_in_full(
    kind: str, query: str, request: pytest.FixtureRequest, tmp_path: Path, ns: str
) -> None:
    """Any `to` the API accepts (up to 10000-01-01, exclusive) answers, with every bucket
    before it, on either store; PostgreSQL's driver cannot carry 10000-01-01 itself."""
    store = open_store(kind, tmp_path, request)
    config = Config(node_id="solo", data_dir=str(tmp_path))
    try:
        last_minute = 253402300740  # 9999-12-31T23:59:00Z
        await store.write(
            [
                (TENANT, ns, "c", DAY0, 5, DAY0 + 1.0, 5),
                (TENANT, ns, "c", last_minute, 9, last_minute + 1.0, 9),
            ]
        )
        async with TestClient(TestServer(history_app(config, store), host="127.0.0.1")) as client:
            series = await client.get(
                f"/v1/namespaces/{ns}/counters/c/history?step=day&from=2020-01-01&{query}"
            )
            body = await series.json(content_type=None)
            assert series.status == 200, body
            assert body["series"] == [
                {"bucket": "2023-11-15T00:00:00Z", "value": 5, "delta": 5},
                {"bucket": "9999-12-31T00:00:00Z", "value": 9, "delta": 4},
            ]
            assert body["to"].startswith("9999-12-31T23:59:59.5")
            rollups = await client.get(
                f"/v1/namespaces/{ns}/rollups?period=day&from=2020-01-01&{query}"
            )
            body = await rollups.json(content_type=None)
            assert rollups.status == 200, body
            assert body["rollups"] == [
                {
                    "period": "2023-11-15T00:00:00Z",
                    "total": 5,
                    "top": [{"name": "c", "increase": 5}],
                },
                {
                    "period": "9999-12-31T00:00:00Z",
                    "total": 4,
                    "top": [{"name": "c", "increase": 4}],
                },
            ]
    finally:
        await store.close()


async def test_api_answers_503_while_postgres_is_unreachable(tmp_path: Path) -> None:
    config = Config(
        node_id="solo", data_dir=str(tmp_path), postgres_url="postgresql://x@127.0.0.1:1/x"
    )
    history = PgHistory(config.postgres_url)
    async with TestClient(TestServer(history_app(config, history))) as client:
        for path in ["/v1/namespaces/ns/counters/c/history", "/v1/namespaces/ns/rollups"]:
            response = await client.get(path)
            body = await response.json(content_type=None)
            assert response.status == 503 and body["type"].endswith("history-unavailable"), body
        response = await client.get("/v1/namespaces/ns/counters/c/history?step=year")
        assert response.status == 400
    await history.close()

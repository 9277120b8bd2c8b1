"""The Redis Streams sink against real servers: standalone Redis and Redis Cluster take a
batch as XADDs to each tenant and namespace's stream, in order, trimmed near MAXLEN; a
Redis that is gone is a SinkError (the pump keeps the batch), not a hang."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from node.realtime.feed_log import Event
from node.realtime.sink_redis import RedisStreamSink, stream_of
from node.realtime.sinks import SinkError
from tests.integration.redis_servers import RedisCluster, RedisServer
from tests.support import free_port


def events(tenant: str, count: int) -> list[Event]:
    return [
        Event(i + 1, tenant, "web", f"c{i % 7}", i, 1, 1_700_000_000_000 + i, i == 3, 2 * i)
        for i in range(count)
    ]


async def read_back(client: object, key: str) -> list[dict[bytes, bytes]]:
    entries = await client.xrange(key)  # type: ignore[attr-defined]
    return [fields for _, fields in entries]


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
async def test_a_batch_lands_in_order_in_each_subjects_stream(
    kind: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    url = redis_server.url if kind == "standalone" else redis_cluster.url
    sink = RedisStreamSink(url, cluster=kind == "cluster", maxlen=1000, timeout_s=2)
    tenant = f"sink-{kind}"
    await sink.publish(events(tenant, 50) + events(tenant + "-other", 5))
    client = redis.Redis.from_url(url) if kind == "standalone" else ClusterClient.from_url(url)
    try:
        got = await read_back(client, stream_of(tenant, "web"))
        assert [int(f[b"value"]) for f in got] == list(range(50))
        assert got[0] == {
            b"name": b"c0",
            b"value": b"0",
            b"change": b"1",
            b"at": b"2023-11-14T22:13:20.000Z",
            b"version": b"0",
        }
        assert got[3][b"replayed"] == b"1"
        assert len(await read_back(client, stream_of(tenant + "-other", "web"))) == 5
    finally:
        await client.aclose()
        await sink.close()


async def test_maxlen_trims_a_stream_near_its_bound(redis_server: RedisServer) -> None:
    sink = RedisStreamSink(redis_server.url, cluster=False, maxlen=100, timeout_s=2)
    for _ in range(10):
        await sink.publish(events("sink-trim", 200))
    client = redis.Redis.from_url(redis_server.url)
    try:
        length = await client.xlen(stream_of("sink-trim", "web"))
        assert 100 <= length < 400, length  # ~: whole macro nodes go, never below the bound
    finally:
        await client.aclose()
        await sink.close()


async def test_a_redis_that_is_gone_is_a_sink_error() -> None:
    sink = RedisStreamSink(
        f"redis://127.0.0.1:{free_port()}", cluster=False, maxlen=10, timeout_s=0.5
    )
    with pytest.raises(SinkError):
        await sink.publish(events("t", 3))
    await sink.close()


async def test_tenants_whose_names_meet_at_a_colon_never_share_a_stream(
    redis_server: RedisServer,
) -> None:
    """Tenants and namespaces may hold ":": tenant "acme:eu" with namespace "billing" and
    tenant "acme" with namespace "eu:billing" must not land in one stream, or one tenant
    reads (and writes into) the other's feed."""
    assert stream_of("acme:eu", "billing") != stream_of("acme", "eu:billing")
    sink = RedisStreamSink(redis_server.url, cluster=False, maxlen=1000, timeout_s=2)
    mine = Event(1, "sink:eu", "billing", "c", 10, 10, 1_700_000_000_000, False, 1)
    theirs = Event(2, "sink", "eu:billing", "c", -999, -999, 1_700_000_000_001, False, 1)
    await sink.publish([mine, theirs])
    client = redis.Redis.from_url(redis_server.url)
    try:
        got = await read_back(client, stream_of("sink:eu", "billing"))
        assert [int(f[b"value"]) for f in got] == [10]
    finally:
        await client.aclose()
        await sink.close()

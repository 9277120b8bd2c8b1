"""The Redis Streams sink: each event as `XADD counters:events:<tenant>/<namespace> MAXLEN ~
<maxlen> * name .. value .. change .. at .. version ..`, a batch per pipeline (standalone
Redis or Redis Cluster, where a stream is one key and the cluster pipeline sends each to its
node). "/" parts tenant and namespace because neither may hold it (both may hold ":"), so
no two tenants share a stream: with ":" tenant "acme:eu"'s namespace "billing" and tenant
"acme"'s namespace "eu:billing" wrote the same stream.

A consumer group of any Redis client reads the stream (XREADGROUP), and a Kafka Connect Redis
source can carry it to Kafka. `MAXLEN ~` keeps each stream near `maxlen` entries at little
cost (Redis trims whole macro nodes). `at` is the publication time, ISO-8601 UTC. Each node
appends its own events, so across a coordinator hand-over a counter's entries from two nodes
may interleave out of order: `version` (its state's, crdt/packed.py) orders them, and a
consumer keeps a counter's value only from an entry whose version is not below the last it
kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from node.realtime.feed_log import Event, iso_ms
from node.realtime.sinks import SinkError
from node.storage.durable_redis import REDIS_ERRORS

STREAM_PREFIX = "counters:events:"


def stream_of(tenant: str, namespace: str) -> str:
    return f"{STREAM_PREFIX}{tenant}/{namespace}"


class RedisStreamSink:
    def __init__(self, url: str, cluster: bool, maxlen: int, timeout_s: float) -> None:
        self.name = "redis-cluster-streams" if cluster else "redis-streams"
        self.maxlen = maxlen
        self.timeout_s = timeout_s
        self._client: Any = (
            RedisCluster.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            if cluster
            else redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        )

    async def publish(self, events: Sequence[Event]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    fields = {
                        "name": event.name,
                        "value": event.value,
                        "change": event.change,
                        "at": iso_ms(event.at_ms),
                        "version": event.version,
                    }
                    if event.replayed:
                        fields["replayed"] = 1
                    pipe.xadd(
                        stream_of(event.tenant, event.namespace),
                        fields,
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        except REDIS_ERRORS as error:
            raise SinkError(f"redis XADD failed: {type(error).__name__}: {error}") from error

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except REDIS_ERRORS:
            pass  # a Redis that is gone holds nothing of ours to close

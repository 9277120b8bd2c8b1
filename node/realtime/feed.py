"""The change feed's parts for one node, composed: its log, publisher, sinks, reader and the
tally of its SSE streams. The sink factory lives here, apart from the sinks themselves."""

from __future__ import annotations

import asyncio
import contextlib

from node.base.config import Config
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.realtime.feed_log import EventLog
from node.realtime.publisher import Publisher
from node.realtime.reader import FeedReader
from node.realtime.sinks import SinkPump
from node.realtime.stream import StreamTally, streams_per_tenant
from node.storage.store import CounterStore

RECALL_MIN_MS = 10_000  # a takeover republishes counters changed within at least this long
CLOSE_DRAIN_S = 2.0  # a clean stop tries this long to hand the sinks what waits


def open_sinks(config: Config) -> list[SinkPump]:
    url = config.events_redis_url or config.events_redis_cluster_url
    if not url:
        return []
    # redis-py costs a tenth of a second to import: only a node that publishes pays it
    from node.realtime.sink_redis import RedisStreamSink

    sink = RedisStreamSink(
        url,
        cluster=bool(config.events_redis_cluster_url),
        maxlen=config.events_stream_maxlen,
        timeout_s=config.redis_timeout_s,
    )
    return [SinkPump(sink, config.events_sink_backlog)]


class Feed:
    def __init__(
        self, config: Config, cluster: Cluster, pool: PeerPool, store: CounterStore
    ) -> None:
        self.log = EventLog(
            cluster.incarnation, config.events_log_max, int(config.events_retention_s * 1000)
        )
        self.pumps = open_sinks(config)
        self.publisher = Publisher(
            self.log,
            config.shards,
            lambda shard: cluster.coordinator(shard) == cluster.node_id,
            store.value,
            self.pumps,
            version_of=store.version,
            min_interval_ms=config.events_min_interval_ms,
            # long enough for the others to notice a coordinator's death and move on
            recall_ms=max(RECALL_MIN_MS, int(4 * config.failure_timeout_s * 1000)),
            placement=cluster.placement,
        )
        # a stream waits for the slowest member each read: a dying one costs at most this
        self.reader = FeedReader(cluster, pool, self.log, min(config.request_timeout_s, 1.0))
        self.tally = StreamTally(config.events_max_streams, streams_per_tenant(config))

    async def drain_sinks(self) -> None:
        for pump in self.pumps:
            await pump.drain()

    async def close(self) -> None:
        """Hand the sinks what waits (briefly: a sink that is down must not hold up a stop),
        then close them."""
        self.tally.closing.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_DRAIN_S):
                await self.drain_sinks()
        for pump in self.pumps:
            await pump.sink.close()

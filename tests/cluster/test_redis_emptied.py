"""A shared Redis that comes back empty (FLUSHALL, a restart without persistence, a failover
to an empty replica) while the nodes keep running is written again.

What a user relies on: README's "A whole cluster killed and restarted reads back every
acknowledged increment in sync mode", even when Redis lost its data in between. The nodes
write only the slots that changed since their last flush; each notices its missing marks
and writes again every slot it answers for, so counters not written since the loss are in
Redis again before the whole cluster is killed.
"""

from __future__ import annotations

import asyncio

import redis

from tests.cluster.harness import Cluster
from tests.integration.redis_servers import RedisServer

NS = "redisemptied"


async def test_sync_writes_acknowledged_before_redis_was_emptied_survive_a_whole_cluster_kill(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "before", 5)
    assert (status, body["durability"]) == (200, "sync"), body
    with redis.Redis(host="127.0.0.1", port=private_redis.port or 0) as admin:
        admin.flushall()  # Redis comes back empty while the nodes run
    status, body = await cluster.increment(nodes[1], NS, "after", 3)
    assert (status, body["durability"]) == (200, "sync"), body  # Redis answers again
    await asyncio.sleep(2)  # ten write-behind intervals: time to repair Redis, if anything did
    for node in nodes:
        node.kill()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    values = {n: await cluster.value(nodes[2], NS, n, "all") for n in ("before", "after")}
    assert values == {"before": 5, "after": 3}, values

"""Redis as the durable replica of a real cluster: restart from it, and live through its outage."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from node.storage.write_behind import PROBE_FRESH_S
from tests.cluster.harness import Cluster, Node, eventually
from tests.cluster.write_stream import WriteStream
from tests.integration.redis_servers import RedisServer

NS = "redisdurable"


async def _persistence(cluster: Cluster, node: Node) -> dict[str, Any]:
    ring = await cluster.ring(node)
    return dict(ring["persistence"])


async def test_whole_cluster_restarts_from_redis_with_exact_totals(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes = await cluster.start(3)
    assert (await _persistence(cluster, nodes[0]))["durable"] == "redis"
    stream = WriteStream(cluster, NS, [f"r{i}" for i in range(8)])
    stream.start(nodes)
    await stream.run_for(1.5)
    for node in nodes:
        node.kill()
    await stream.stop()
    for node in nodes:  # every node died: the counts can only come back from Redis
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    totals = await cluster.agreed(NS, stream.names, nodes)
    for name in stream.names:
        low, high = stream.acked[name], stream.acked[name] + stream.ambiguous[name]
        assert low <= totals[name] <= high, (name, low, totals[name], high)


async def _wait_store_down(cluster: Cluster, nodes: list[Node]) -> None:
    async def noticed() -> bool:
        statuses = [await _persistence(cluster, node) for node in nodes]
        return not any(status["healthy"] for status in statuses)

    await eventually(noticed, "every node to notice Redis is down", 10)


async def _wait_drained(cluster: Cluster, nodes: list[Node]) -> None:
    async def drained() -> bool:
        statuses = [await _persistence(cluster, node) for node in nodes]
        return all(s["healthy"] and s["backlog"] == 0 for s in statuses)

    await eventually(drained, "the backlog to drain into Redis", 20)


async def test_redis_outage_async_writes_go_on_and_the_backlog_drains(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes = await cluster.start(3)
    private_redis.stop()
    await _wait_store_down(cluster, nodes)
    # Async: still serving, so still ready; the outage is in the body (node/http/health.py).
    status, ready = await cluster.get(nodes[0], "/readyz")
    assert status == 200 and any("durable replica degraded" in d for d in ready["degraded"]), ready
    for i in range(30):
        status, body = await cluster.increment(nodes[i % 3], NS, "outage", 2)
        assert status == 200 and body["durability"] == "async", body
    assert (await _persistence(cluster, nodes[0]))["backlog"] > 0
    private_redis.restart()
    await _wait_drained(cluster, nodes)
    for node in nodes:
        node.kill()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
        await cluster.wait_all_up(node, 3)
    assert await cluster.value(nodes[0], NS, "outage", "all") == 60  # it all reached Redis


async def test_redis_outage_sync_writes_refused_without_effect(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "refused", 4)
    assert status == 200 and body["durability"] == "sync", body
    private_redis.stop()
    # Without waiting for the nodes to notice: a sync write checks the store before applying
    # anything (a check at most PROBE_FRESH_S old), so each is refused with nothing applied.
    await asyncio.sleep(PROBE_FRESH_S * 2)  # let the last successful check grow stale
    for node in nodes:
        status, body = await cluster.increment(node, NS, "refused", 5)
        assert status == 503 and body["may_have_applied"] is False, body
    await _wait_store_down(cluster, nodes)
    assert await cluster.value(nodes[1], NS, "refused", "all") == 4  # nothing applied
    private_redis.restart()
    await _wait_drained(cluster, nodes)
    status, body = await cluster.increment(nodes[2], NS, "refused", 5)
    assert status == 200 and body["value"] == 9, (status, body)


async def test_a_node_whose_data_dir_was_lost_takes_a_new_actor_id_from_redis(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes = await cluster.start(3)
    for node in nodes:
        status, _ = await cluster.increment(node, NS, "lost-dir", 5, consistency="all")
        assert status == 200
    victim = nodes[0]
    victim.kill()
    shutil.rmtree(cluster.root / victim.node_id)  # incarnation file and ring gone
    victim.start(cluster.seeds())
    await cluster.wait_ready(victim)
    for node in nodes:
        await cluster.wait_all_up(node, 3)
    status, body = await cluster.increment(victim, NS, "lost-dir", 5, consistency="all")
    # a reused actor slot would absorb it
    assert status == 200 and body["value"] == 20, (status, body)
    incarnation = (cluster.root / victim.node_id / "incarnation").read_text().strip()
    assert int(incarnation) >= 2

"""Nodes that restart while Redis, their durable replica, is down.

A restarted node holds nothing in memory. It recovers from Redis and from its peers before it
reports ready (node/cluster/handoff.py), and peers alone are not enough: when every node died,
only Redis has the counts. So while Redis is down a restarted node stays not ready, says why,
and answers no read with a value that lacks an acknowledged increment; once Redis is back it
becomes ready with every acknowledged increment.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisServer

NS = "noredis"
NAMES = ["a", "b", "c"]


async def _write(cluster: Cluster, nodes: list[Node], acked: dict[str, int], rounds: int) -> None:
    for i in range(rounds):
        name = NAMES[i % len(NAMES)]
        status, body = await cluster.increment(nodes[i % len(nodes)], NS, name, i + 1)
        assert status == 200, body
        acked[name] += i + 1


async def _wait_drained(cluster: Cluster, nodes: list[Node]) -> None:
    """Every node has flushed everything to Redis (the async contract's precondition)."""

    async def drained() -> bool:
        for node in nodes:
            persistence = (await cluster.ring(node))["persistence"]
            if not (persistence["healthy"] and persistence["backlog"] == 0):
                return False
        return True

    await eventually(drained, "every node to flush to Redis", 20)


async def _not_ready(cluster: Cluster, node: Node) -> dict[str, Any]:
    status, body = await cluster.get(node, "/readyz")
    assert status == 503, body
    return dict(body)


async def _reasons_include(cluster: Cluster, node: Node, *parts: str) -> None:
    async def reported() -> bool:
        reasons = (await _not_ready(cluster, node))["reasons"]
        return all(any(part in reason for reason in reasons) for part in parts)

    await eventually(reported, f"{node.node_id}'s readyz to say {parts}", 20)


async def _tried_redis(node: Node) -> bool:
    return "cannot recover from the durable replica yet" in node.log_path.read_text()


async def _reads_refused(cluster: Cluster, node: Node) -> None:
    """A node that is not ready forwards reads to a ready replica; with none, it refuses."""
    for name in NAMES:
        status, body = await cluster.get(node, f"/v1/namespaces/{NS}/counters/{name}")
        assert status == 503, (name, body)


async def test_a_cluster_restarted_while_redis_is_down_waits_for_redis_then_has_every_count(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes = await cluster.start(3)
    n1, n2, n3 = nodes
    acked = dict.fromkeys(NAMES, 0)
    await _write(cluster, nodes, acked, 30)
    await _wait_drained(cluster, nodes)
    for node in nodes:
        node.kill()
    private_redis.stop()

    n1.start(cluster.seeds())  # alone: its peers are dead too
    await _reasons_include(cluster, n1, "recovering", "store unreachable")
    await _reads_refused(cluster, n1)

    n2.start(cluster.seeds())
    n3.start(cluster.seeds())
    for node in nodes:  # they meet, try Redis, and still do not claim to be ready
        await eventually(lambda node=node: _tried_redis(node), f"{node.node_id} to try Redis", 20)
        await _reasons_include(cluster, node, "recovering", "store unreachable")
    for node in nodes:
        await _reads_refused(cluster, node)

    private_redis.start()
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.converged(NS, acked, nodes)


async def test_a_node_restarted_while_redis_is_down_waits_for_redis_though_peers_are_up(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes = await cluster.start(3)
    n1, n2, n3 = nodes
    acked = dict.fromkeys(NAMES, 0)
    await _write(cluster, nodes, acked, 12)
    await _wait_drained(cluster, nodes)
    n1.kill()
    private_redis.stop()
    await _write(cluster, [n2, n3], acked, 12)  # async writes go on without Redis

    n1.start(cluster.seeds())
    await eventually(lambda: _tried_redis(n1), "n1 to try Redis", 20)
    await _reasons_include(cluster, n1, "recovering", "store unreachable")
    # The others serve on; n1 forwards what it cannot serve, so its answers are whole.
    for name in NAMES:
        assert await cluster.value(n1, NS, name, "quorum") == acked[name]
    await _write(cluster, [n1, n2, n3], acked, 6)

    private_redis.start()
    await cluster.wait_ready(n1)
    for node in nodes:
        await cluster.wait_all_up(node, 3)
    await cluster.converged(NS, acked, nodes)

"""Background loops that never die silently, on real node processes and a real Redis Cluster.

A whole Redis Cluster down makes redis-py raise RedisClusterException, which is not a
RedisError: before it was mapped to DurableError, it ended every node's write-behind within
a second (while /readyz stayed green) and crashed a node's start. Now the outage is an
outage like any other: writes go on, /readyz and the metrics say the durable replica is
degraded, a node starts (and says it waits for the store to recover), and once Redis Cluster
is back the backlog drains. The harness fails the test if a node logs an error or exits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisCluster

NS = "supervised"


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of the test's own, since the test stops it (the session's is shared).
    Take it before `cluster`, so the nodes stop before it does."""
    with RedisCluster(tmp_path / "redis-cluster") as server:
        yield server


async def _readyz(cluster: Cluster, node: Node) -> tuple[int, dict[str, Any]]:
    status, body = await cluster.get(node, "/readyz")
    return status, dict(body)


async def _metric_lines(cluster: Cluster, node: Node, prefix: str) -> list[str]:
    status, text = await cluster.get(node, "/metrics")
    assert status == 200
    return [line for line in str(text).splitlines() if line.startswith(prefix)]


async def test_a_whole_redis_cluster_down_neither_kills_write_behind_nor_a_start(
    private_redis_cluster: RedisCluster, cluster: Cluster
):
    cluster.settings.update(
        COUNTERS_REDIS_CLUSTER_URL=private_redis_cluster.url, COUNTERS_REDIS_TIMEOUT_S="1"
    )
    nodes = await cluster.start(3)
    n1, n2, n3 = nodes
    acked = 0
    for i in range(9):
        status, body = await cluster.increment(nodes[i % 3], NS, "c", 1)
        assert status == 200, body
        acked += 1
    redis_nodes = list(private_redis_cluster.nodes)
    for server in redis_nodes:  # the whole Redis Cluster goes away
        server.stop()

    async def degraded_everywhere() -> bool:
        for node in nodes:
            status, body = await _readyz(cluster, node)
            assert status == 200, (node.node_id, body)  # async: still serving
            if not any("durable replica degraded" in d for d in body.get("degraded", [])):
                return False
        return True

    await eventually(degraded_everywhere, "every node to report its durable replica", 20)
    until = time.monotonic() + 3  # the persisters live on: writes go on, flushes keep failing
    while time.monotonic() < until:
        for node in nodes:
            status, body = await cluster.increment(node, NS, "c", 1)
            assert status == 200, body
            acked += 1
    for node in nodes:
        status, body = await _readyz(cluster, node)
        assert status == 200 and body["persistence"]["backlog"] > 0, body
        persister = [loop for loop in body["loops"] if loop["loop"] == "persister"]
        assert persister and persister[0]["errors"] == 0, body  # an outage, not a bug
        assert await _metric_lines(cluster, node, "counters_durable_replica_up 0")
        assert await _metric_lines(cluster, node, 'counters_loop_errors_total{loop="persister"} 0')

    # A node that starts while the whole Redis Cluster is down starts, and says it waits.
    n3.kill()
    n3.start(cluster.seeds())

    async def waits_for_the_store() -> bool:
        assert n3.running, n3.log_tail()
        status, body = await _readyz(cluster, n3)
        return status == 503 and any("store unreachable" in r for r in body["reasons"])

    await eventually(waits_for_the_store, "n3 to start and wait for the durable replica", 30)

    for server in redis_nodes:  # back on the same ports, with the same cluster config
        server.start()
    await cluster.wait_ready(n3, timeout=60)

    async def drained() -> bool:
        for node in nodes:
            status, body = await _readyz(cluster, node)
            persistence = body["persistence"]
            if status != 200 or body["degraded"] or persistence["backlog"]:
                return False
        return True

    await eventually(drained, "every node to drain its backlog into Redis Cluster", 60)
    assert await cluster.value(n1, NS, "c", "all") == acked
    assert n1.running and n2.running and n3.running

"""/readyz when the durable replica hangs (Redis paused by SIGSTOP), on real node processes.

Readiness says whether this node can serve. In async durability a node serves from memory
and catches Redis up later, so a paused Redis must not take any node out of rotation: every
node stays ready, says "durable replica degraded" in the body and the metrics, async writes
go on, and the backlog drains once Redis resumes. In sync durability writes are refused
while Redis does not answer, so /readyz answers 503 and says so, and reads still work.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisServer

NS = "degraded"
PAUSE_S = 12.0  # the brief: every node stays ready through at least 10 s of pause
REDIS_TIMEOUT_S = "1"  # so the nodes notice the pause within seconds


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the Redis: connected and silent, the hardest outage to notice."""
    with redis.Redis(host="127.0.0.1", port=server.port or 0, socket_timeout=5) as client:
        pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _readyz(cluster: Cluster, node: Node) -> tuple[int, dict[str, Any]]:
    status, body = await cluster.get(node, "/readyz")
    return status, dict(body)


async def _metric(cluster: Cluster, node: Node, name: str) -> float | None:
    status, text = await cluster.get(node, "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_paused_redis_leaves_every_node_ready_in_async_mode(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(
        COUNTERS_REDIS_URL=private_redis.url, COUNTERS_REDIS_TIMEOUT_S=REDIS_TIMEOUT_S
    )
    nodes = await cluster.start(3)
    acked = 0
    with paused(private_redis):
        started = time.monotonic()
        degraded_seen: set[str] = set()
        while time.monotonic() - started < PAUSE_S:
            for i, node in enumerate(nodes):
                status, body = await _readyz(cluster, node)
                assert status == 200, (node.node_id, time.monotonic() - started, body)
                if any("durable replica degraded: backlog" in d for d in body.get("degraded", [])):
                    degraded_seen.add(node.node_id)
                status, reply = await cluster.increment(node, NS, "c", i + 1)
                assert status == 200 and reply["durability"] == "async", reply
                acked += i + 1
        # Long enough for every node to have noticed (a 1 s Redis timeout), yet all ready.
        assert degraded_seen == {n.node_id for n in nodes}, degraded_seen
        for node in nodes:
            assert await _metric(cluster, node, "counters_durable_replica_up") == 0.0
            assert await _metric(cluster, node, "counters_node_ready") == 1.0
            backlog = await _metric(cluster, node, "counters_persistence_backlog")
            assert backlog is not None and backlog > 0
    # Redis resumed: the backlog drains, the body says nothing is degraded any more.

    async def drained() -> bool:
        for node in nodes:
            status, body = await _readyz(cluster, node)
            persistence = body["persistence"]
            if (
                status != 200
                or body["degraded"]
                or persistence["backlog"]
                or not persistence["healthy"]
            ):
                return False
        return True

    await eventually(drained, "every node to drain its backlog into Redis", 30)
    for node in nodes:
        assert await _metric(cluster, node, "counters_durable_replica_up") == 1.0
    await cluster.converged(NS, {"c": acked}, nodes)
    for node in nodes:  # what they hold now came from Redis: the backlog really drained
        node.kill()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    assert await cluster.value(nodes[0], NS, "c", "all") == acked


async def test_a_paused_redis_refuses_writes_in_sync_mode_and_says_so_while_reads_work(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(
        COUNTERS_REDIS_URL=private_redis.url,
        COUNTERS_REDIS_TIMEOUT_S=REDIS_TIMEOUT_S,
        COUNTERS_DURABILITY="sync",
    )
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "s", 4)
    assert (status, body["durability"]) == (200, "sync"), body
    with paused(private_redis):

        async def refusing() -> bool:
            status, body = await _readyz(cluster, nodes[1])
            return status == 503 and any("writes refused" in r for r in body["reasons"])

        await eventually(refusing, "readyz to say sync writes are refused", 20)
        status, body = await _readyz(cluster, nodes[1])
        assert any("reads still work" in r for r in body["reasons"]), body
        assert body["persistence"]["healthy"] is False, body
        assert await _metric(cluster, nodes[1], "counters_node_ready") == 0.0  # as /readyz says
        for node in nodes:  # reads still work, at the default consistency too
            assert await cluster.value(node, NS, "s", "quorum") == 4
        status, body = await cluster.increment(nodes[2], NS, "s", 1)
        assert status == 503 and body["may_have_applied"] is False, body
    for node in nodes:
        await cluster.wait_ready(node)
    status, body = await cluster.increment(nodes[2], NS, "s", 1)
    assert (status, body["value"]) == (200, 5), body

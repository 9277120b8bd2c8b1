"""`--durability sync` when Redis fails around a write, on a real 3-node cluster.

A sync write checks that Redis answers before it applies anything, then waits for the flush
that carries it. Redis can fail on either side of that line:
- after the check, before the flush lands: the write applied in memory, so the answer (503 or
  504) says it may still apply, and once Redis is back it is in Redis exactly once;
- before the check: the answer is 503 with may_have_applied false, and nothing changed.
Redis's write pause (CLIENT PAUSE WRITE) opens the first window deterministically: PING, the
pre-check, still answers while the flush's script waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import redis

from node.storage.write_behind import PROBE_FRESH_S
from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisServer

NS = "syncfail"
TENANT = "default"  # every caller's tenant with --auth none
REQUEST_TIMEOUT_S = 2.0
MARGIN_S = 2.5  # a loaded 2-core machine answers late, never early
PROBLEMS = "/problems/"


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port or 0, socket_timeout=5)


def redis_total(server: RedisServer, name: str) -> int:
    """The counter's value as Redis holds it (sum of P slots minus N slots)."""
    member = json.dumps([TENANT, NS, name], separators=(",", ":"))
    with _client(server) as client:
        keys = [k for k in client.scan_iter(match="ctr:{*}:*") if k.decode().endswith(member)]
        assert len(keys) <= 1, keys
        if not keys:
            return 0
        fields = client.hgetall(keys[0])
    return sum(int(v) * (1 if f.startswith(b"p:") else -1) for f, v in fields.items())


async def _start(
    cluster: Cluster, server: RedisServer, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> list[Node]:
    cluster.settings.update(
        COUNTERS_REDIS_URL=server.url,
        COUNTERS_DURABILITY="sync",
        COUNTERS_REQUEST_TIMEOUT_S=str(request_timeout_s),
    )
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "c", 5)
    assert (status, body["durability"], body["value"]) == (200, "sync", 5), body
    assert redis_total(server, "c") == 5
    return nodes


async def _restart_all_and_expect(cluster: Cluster, nodes: list[Node], value: int) -> None:
    """kill -9 every node and start them again: what they hold now came from Redis."""
    for node in nodes:
        node.kill()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.converged(NS, {"c": value}, nodes)


async def _redis_holds(server: RedisServer, value: int) -> None:
    async def holds() -> bool:
        return redis_total(server, "c") == value

    await eventually(holds, f"Redis to hold c = {value}", 20)


async def test_a_flush_that_hangs_after_the_write_applied_answers_504_that_may_apply(
    private_redis: RedisServer, cluster: Cluster
):
    nodes = await _start(cluster, private_redis)
    with _client(private_redis) as client:
        client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        started = time.monotonic()
        status, body = await cluster.increment(nodes[0], NS, "c", 3)
        elapsed = time.monotonic() - started
        assert status == 504, body
        assert body["type"] == PROBLEMS + "quorum-timeout", body
        assert body["may_have_applied"] is True, body
        assert "durable replica did not confirm" in body["detail"], body
        assert REQUEST_TIMEOUT_S <= elapsed < 2 * REQUEST_TIMEOUT_S + MARGIN_S, elapsed
        # The window itself: the replicas hold it, Redis does not yet.
        assert await cluster.value(nodes[1], NS, "c", "all") == 8
        assert redis_total(private_redis, "c") == 5
    finally:
        with _client(private_redis) as client:
            client.execute_command("CLIENT", "UNPAUSE")
    await _redis_holds(private_redis, 8)
    await _restart_all_and_expect(cluster, nodes, 8)


async def test_a_flush_that_fails_after_the_write_applied_answers_503_that_may_apply(
    private_redis: RedisServer, cluster: Cluster
):
    # A longer request timeout, so the flush fails (Redis killed) before the wait times out.
    nodes = await _start(cluster, private_redis, request_timeout_s=8)
    with _client(private_redis) as client:
        client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    write = asyncio.create_task(cluster.increment(nodes[0], NS, "c", 3))

    async def applied() -> bool:
        return await cluster.value(nodes[0], NS, "c") == 8

    await eventually(applied, "the write to apply in memory", 10)
    assert not write.done()  # it waits for the flush
    private_redis.kill()  # the flush's connection drops, and reconnecting is refused
    started = time.monotonic()
    status, body = await asyncio.wait_for(write, 8 + MARGIN_S)
    assert status == 503, body
    assert body["type"] == PROBLEMS + "quorum-unavailable", body
    assert body["may_have_applied"] is True, body
    assert "will persist when it returns" in body["detail"], body
    assert time.monotonic() - started < 8, "failed by the flush, not the request timeout"
    private_redis.start()  # the same port and AOF: c = 5 as acknowledged
    await _redis_holds(private_redis, 8)
    await _restart_all_and_expect(cluster, nodes, 8)


async def test_a_sync_write_to_a_paused_redis_answers_503_with_nothing_applied(
    private_redis: RedisServer, cluster: Cluster
):
    nodes = await _start(cluster, private_redis)
    with _client(private_redis) as client:
        pid = int(client.info("server")["process_id"])
    await asyncio.sleep(PROBE_FRESH_S * 2)  # the last reachability check is now stale
    os.kill(pid, signal.SIGSTOP)  # connected, silent: no refusal to notice, only time
    try:
        for node in nodes:
            started = time.monotonic()
            status, body = await cluster.increment(node, NS, "c", 7)
            assert status == 503, body
            assert body["type"] == PROBLEMS + "quorum-unavailable", body
            assert body["may_have_applied"] is False, body
            assert time.monotonic() - started < REQUEST_TIMEOUT_S + MARGIN_S
        for node in nodes:
            assert await cluster.value(node, NS, "c", "all") == 5  # nothing applied anywhere

        async def not_ready() -> bool:
            status, body = await cluster.get(nodes[0], "/readyz")
            return status == 503 and any("store unreachable" in r for r in body["reasons"])

        await eventually(not_ready, "readyz to report the silent store", 20)
        assert "durable replica unreachable" in nodes[0].log_path.read_text()  # and logs it
    finally:
        os.kill(pid, signal.SIGCONT)
    for node in nodes:
        await cluster.wait_ready(node)
    status, body = await cluster.increment(nodes[2], NS, "c", 7)
    assert (status, body["value"]) == (200, 12), body
    assert redis_total(private_redis, "c") == 12

"""Real processes, SIGSTOP and kill -9: the replicas that granted a paused attempt restart
(data dir kept, or with Redis), and a retry still meets the attempt's reservation (issue 11).

The fault is timed as in test_fencing.py: n1 (a long request timeout, so its attempt
outlives the pause) takes a keyed increment while its peers are paused, is paused once it
reserved, and its peers resume and the one it asked grants (the grant waits in n1's
socket). Once a write-behind flush has run after the grant, that peer is killed and
restarted, and a client retries there. Before, the
restarted replica had forgotten its grant: with the other peer's grant the retry applied,
and so did n1 when resumed, counting the key twice. Now the retry answers 503 in-doubt and
the key counts once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, Node
from tests.cluster.test_fencing import _increment, _metric, counted_once, paused_mid_request
from tests.integration.redis_servers import RedisServer
from tests.support import eventually


async def _durable_through(cluster: Cluster, node: Node) -> float:
    """Unix time before which everything the node applied is in its durable replica."""
    status, body = await cluster.get(node, "/admin/ring")
    assert status == 200, body
    return float(body["persistence"]["durable_through"])


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_grants_outlive_a_restart_of_the_replicas_that_gave_them(
    backend: str, private_redis: RedisServer, cluster: Cluster, tmp_path: Path
):
    if backend == "redis":
        cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes, name, attempt = await paused_mid_request(cluster)
    first, second, third = nodes
    try:

        async def granting() -> Node | None:
            for node in (second, third):  # n1 asked one peer for the grant it lacked
                if await _metric(cluster, node, "counters_idempotency_reservations") >= 1:
                    return node
            return None

        granter = await eventually(granting, "a peer to grant", 10)
        granted_at = time.time()

        async def flushed() -> bool:  # the write-behind interval after the grant passed
            return await _durable_through(cluster, granter) > granted_at

        await eventually(flushed, "a flush after the grant", 10)
        granter.kill()
        granter.start(cluster.seeds())
        await cluster.wait_ready(granter)
        await cluster.wait_marked_down(second if granter is third else third, first)
        answers: list[tuple[int, Any]] = []

        async def answered() -> bool:  # until the restarted node stops waiting on n1's link
            status, body, _ = await _increment(cluster, granter, name)
            answers.append((status, body))
            return status != 504

        await eventually(answered, "an answer other than a timeout", 30)

        status, body = answers[-1]
        assert status == 503 and body["type"].endswith("/in-doubt"), answers
        first.resume()
        status, body, _ = await attempt
        assert (status, body.get("value")) == (200, 5) or body["type"].endswith("/in-doubt"), (
            status,
            body,
        )
    finally:
        for node in nodes:
            if node.running:
                node.resume()
        if not attempt.done():
            attempt.cancel()
    await counted_once(cluster, nodes, name)

"""Real processes, SIGSTOP: a keyed increment's first coordinator is paused mid-request and
a retry runs on another node; the key counts once (issue 11).

The fault, and how it is timed without sleeps: the first coordinator n1 (its request
timeout long, so its attempt outlives the pause) takes a keyed increment while its two
peers are paused; once n1's /metrics shows the key reserved (the reserve-or-read request
is written to the paused peer's socket), n1 is paused too, then the peers resumed. They
grant n1's attempt (the grant waits in n1's socket) and mark n1 down; the client's retry
runs on n2, now the first serving replica, while n1 still holds an attempt that may apply
the moment it resumes. On main the retry applies and n1 applies too when resumed: the key
counts twice. Fenced, the retry answers 503 in-doubt with Retry-After, applying nothing;
n1 resumes and either applies (its grant came first) or gives its attempt up (the retry's
question came first); a later retry answers 200, and the key counts once everywhere.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from tests.cluster.harness import Cluster, Node
from tests.support import eventually

NS = "fence"
KEY = "order-1"
LONG_TIMEOUT = {"COUNTERS_REQUEST_TIMEOUT_S": "30"}  # the paused coordinator's attempt waits


async def _increment(cluster: Cluster, node: Node, name: str) -> tuple[int, Any, dict[str, str]]:
    assert cluster.session is not None
    async with cluster.session.post(
        f"{node.url}/v1/namespaces/{NS}/counters/{name}/increment",
        json={"delta": 5},
        headers={"Idempotency-Key": KEY},
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:
        body = await response.json(content_type=None)
        return response.status, body, dict(response.headers)


async def _metric(cluster: Cluster, node: Node, name: str) -> float:
    assert cluster.session is not None
    async with cluster.session.get(f"{node.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _counter_coordinated_by(ring: dict[str, Any], node_id: str) -> str:
    from ring import key_hash

    for i in range(10_000):
        name = f"c{i}"
        shard = key_hash("default", NS, name) & (ring["shards"] - 1)
        if ring["preference_lists"][shard][0] == node_id:
            return name
    raise AssertionError(f"no counter has {node_id} first")


async def paused_mid_request(cluster: Cluster) -> tuple[list[Node], str, asyncio.Future[Any]]:
    """Three nodes; n1 (a long request timeout) took a keyed increment of a counter it
    coordinates, reserved the key, and is paused; n2 and n3 run. Returns the nodes, the
    counter, and n1's attempt (answered once n1 resumes)."""
    first, second, third = (cluster.add(f"n{i}") for i in (1, 2, 3))
    first.start(cluster.seeds(), **LONG_TIMEOUT)
    second.start(cluster.seeds())
    third.start(cluster.seeds())
    nodes = [first, second, third]
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.settled_ring(nodes, {n.node_id for n in nodes})
    name = _counter_coordinated_by(await cluster.ring(first), first.node_id)

    second.pause()
    third.pause()
    attempt = asyncio.ensure_future(_increment(cluster, first, name))
    try:

        async def reserved() -> bool:
            return await _metric(cluster, first, "counters_idempotency_reservations") >= 1

        await eventually(reserved, "n1 to reserve the key", 10)
        first.pause()
    finally:
        second.resume()
        third.resume()
    return nodes, name, attempt


async def counted_once(cluster: Cluster, nodes: list[Node], name: str) -> None:
    """Every node resumed: a retry answers 200 and the key counts once everywhere."""
    await cluster.settled_ring(nodes, {n.node_id for n in nodes})

    async def answered() -> bool:
        status, body, _ = await _increment(cluster, nodes[1], name)
        return status == 200 and body["value"] == 5

    await eventually(answered, "a retry answered 200 with the key counted once", 20)
    await cluster.converged(NS, {name: 5}, nodes)


async def test_a_retry_while_the_coordinator_is_paused_mid_request_counts_once(cluster: Cluster):
    nodes, name, attempt = await paused_mid_request(cluster)
    first, second, _ = nodes
    try:
        await cluster.wait_marked_down(second, first)

        status, body, headers = await _increment(cluster, second, name)

        assert status == 503 and body["type"].endswith("/in-doubt"), (status, body)
        assert body["may_have_applied"] is True and int(headers["Retry-After"]) >= 1, headers
        first.resume()
        status, body, _ = await attempt
        assert (status, body.get("value")) == (200, 5) or body["type"].endswith("/in-doubt"), (
            status,
            body,
        )
    finally:
        first.resume()
        if not attempt.done():
            attempt.cancel()
    await counted_once(cluster, nodes, name)

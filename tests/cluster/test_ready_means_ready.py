"""A node whose /readyz says 200 serves keyed writes, keyed batches and resets at once.

Issue 11, problem 3: nodes said ready while their view of the others still showed them
joining, so every request that reads a quorum of serving replicas before it writes answered
503 for seconds. Here every node is started at once, /readyz is polled tightly, and the
requests go out the moment it turns 200 (node/cluster/readiness.py states the promise).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.cluster.harness import REPO, Cluster, Node, eventually, free_port
from tests.integration.redis_servers import RedisServer

NAMES = [f"c{i}" for i in range(6)]  # spread over shards, so some are coordinated elsewhere


async def _the_moment_ready(cluster: Cluster, node: Node, ns: str, tag: str) -> list[Any]:
    """Poll /readyz every few milliseconds; as soon as it answers 200, send keyed writes,
    a keyed batch and resets all at once. Returns what did not answer 200."""
    deadline = time.monotonic() + 60
    while True:
        assert node.running, f"{node.node_id} exited:\n{node.log_tail()}"
        assert time.monotonic() < deadline, f"{node.node_id} not ready in 60s"
        try:
            status, _ = await cluster.get(node, "/readyz")
        except OSError:
            status = 0
        if status == 200:
            break
        await asyncio.sleep(0.005)
    who = f"{tag}-{node.node_id}"
    base = f"/v1/namespaces/{ns}"
    keyed = [
        cluster.request(
            "POST",
            node,
            f"{base}/counters/{name}/increment",
            json={"delta": 1},
            headers={"Idempotency-Key": f"{who}-{name}"},
        )
        for name in NAMES
    ]
    batch = cluster.request(
        "POST",
        node,
        f"{base}/batch",
        json={"ops": [{"op": "increment", "name": name, "delta": 1} for name in NAMES]},
        headers={"Idempotency-Key": f"{who}-batch"},
    )
    resets = [cluster.request("DELETE", node, f"{base}/counters/r-{name}") for name in NAMES]
    answers = await asyncio.gather(*keyed, batch, *resets)
    what = [f"keyed {n}" for n in NAMES] + ["batch"] + [f"reset r-{n}" for n in NAMES]
    return [
        (node.node_id, request, status, body)
        for request, (status, body) in zip(what, answers, strict=True)
        if status != 200
    ]


async def _all_at_once(cluster: Cluster, nodes: list[Node], ns: str, tag: str) -> None:
    for node in nodes:
        node.start(cluster.seeds())
    failures = await asyncio.gather(*(_the_moment_ready(cluster, n, ns, tag) for n in nodes))
    refused = [failure for found in failures for failure in found]
    assert not refused, f"{len(refused)} requests refused right after ready: {refused[:4]}"


async def test_a_fresh_cluster_with_redis_serves_keyed_ops_and_resets_once_ready(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes = [cluster.add(f"n{i + 1}") for i in range(3)]
    await _all_at_once(cluster, nodes, "ready-" + uuid.uuid4().hex[:8], "fresh")


async def test_a_whole_cluster_restart_serves_keyed_ops_and_resets_once_ready(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    ns = "ready-" + uuid.uuid4().hex[:8]
    nodes = await cluster.start(3)
    for index, node in enumerate(nodes):
        for name in NAMES:  # something to recover and to reset
            status, body = await cluster.increment(node, ns, f"r-{name}", index + 1)
            assert status == 200, body
    for node in nodes:
        node.kill()
    await _all_at_once(cluster, nodes, ns, "restart")
    # The resets cleared what was there before them; the keyed ops each applied once.
    totals = await cluster.agreed(ns, NAMES + [f"r-{n}" for n in NAMES], nodes)
    assert all(totals[name] == 2 * len(nodes) for name in NAMES), totals
    assert all(totals[f"r-{name}"] == 0 for name in NAMES), totals


async def test_a_one_second_window_replays_within_it_and_applies_again_after(cluster: Cluster):
    # 1 s is allowed with a request timeout of a third of it (node/base/config.py).
    cluster.settings.update(COUNTERS_IDEMPOTENCY_WINDOW_S="1", COUNTERS_REQUEST_TIMEOUT_S="0.3")
    nodes = await cluster.start(3)
    ns = "window-" + uuid.uuid4().hex[:8]
    path = f"/v1/namespaces/{ns}/counters/w/increment"
    batch_path = f"/v1/namespaces/{ns}/batch"
    batch_body = {"ops": [{"op": "increment", "name": "b", "delta": 1}]}

    async def keyed(node: Node) -> int:
        status, body = await cluster.request(
            "POST", node, path, json={"delta": 1}, headers={"Idempotency-Key": "once"}
        )
        assert status == 200, body
        return int(body["value"])

    async def batch(node: Node) -> int:
        status, body = await cluster.request(
            "POST", node, batch_path, json=batch_body, headers={"Idempotency-Key": "once"}
        )
        assert status == 200, body
        return int(body["results"][0]["value"])

    started = time.monotonic()
    assert await keyed(nodes[0]) == 1
    assert await batch(nodes[0]) == 1
    for node in nodes:  # retries on any node within the window replay the first answer
        assert await keyed(node) == 1
        assert await batch(node) == 1
    assert time.monotonic() - started < 1.0, "too slow to retry inside the window"

    async def applied_again() -> bool:
        value = await keyed(nodes[1])
        assert value in (1, 2), value
        return value == 2

    await eventually(applied_again, "a retry after the window to apply again", 10, every=0.1)
    assert time.monotonic() - started >= 1.0

    async def batch_applied_again() -> bool:
        value = await batch(nodes[2])
        assert value in (1, 2), value
        return value == 2

    await eventually(batch_applied_again, "a batch retry after the window to apply", 10)
    assert await cluster.value(nodes[2], ns, "w", "quorum") == 2
    assert await cluster.value(nodes[2], ns, "b", "quorum") == 2


def test_a_window_shorter_than_a_timed_out_attempt_is_refused_at_start(tmp_path: Path):
    command = [
        sys.executable, "-m", "node", "node",
        "--node-id", "n1",
        "--listen", f"127.0.0.1:{free_port()}",
        "--data-dir", str(tmp_path / "n1"),
        "--idempotency-window-s", "1",
        "--auth", "none",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "idempotency-window-s (1) must be at least 3 x request-timeout-s (6)" in done.stderr, (
        done.stderr
    )

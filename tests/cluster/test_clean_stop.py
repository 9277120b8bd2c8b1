"""SIGTERM under load: a node stops cleanly (exit 0, no crash in a half-finished sqlite
write) and, restarted, holds every increment it acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.cluster.harness import Cluster, Node, eventually

NS = "stop"
WORKERS = 6
NAMES = [f"c{i}" for i in range(1000 * WORKERS)]  # many counters: each flush takes a while
ROUND_GOAL = 2 * len(NAMES)  # acknowledged increments a round needs before its SIGTERM


async def _hammer(cluster: Cluster, node: Node, names: list[str], acked: dict[str, int]) -> Any:
    """Batches of increments until the node stops answering; returns why it stopped."""
    ops = [{"op": "increment", "name": name, "delta": 1} for name in names]
    while True:
        try:
            status, body = await cluster.request(
                "POST", node, f"/v1/namespaces/{NS}/batch", json={"ops": ops}
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return error  # the node is going: what it did not answer is not acknowledged
        if status != 200:
            return status, body
        for result in body["results"]:
            if "value" in result:
                acked[result["name"]] += 1


async def test_sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_increment(
    cluster: Cluster,
):
    [node] = await cluster.start(1)
    acked = dict.fromkeys(NAMES, 0)
    for _ in range(3):  # a few stops, each in the middle of writes
        before = sum(acked.values())
        workers = [
            asyncio.create_task(_hammer(cluster, node, NAMES[i * 1000 : (i + 1) * 1000], acked))
            for i in range(WORKERS)
        ]

        async def busy(before: int = before) -> bool:  # two batches a worker, and more coming
            return sum(acked.values()) - before >= ROUND_GOAL

        await eventually(busy, f"{ROUND_GOAL} acknowledged increments this round", 60)
        stopped = [worker.result() for worker in workers if worker.done()]
        assert not stopped, f"workers stopped before the SIGTERM: {stopped}"
        assert node.terminate() == 0, node.log_tail()
        await asyncio.gather(*workers)
        node.start([])
        await cluster.wait_ready(node)
    values = {}
    for start in range(0, len(NAMES), 1000):
        ops = [{"op": "get", "name": name} for name in NAMES[start : start + 1000]]
        status, body = await cluster.request(
            "POST", node, f"/v1/namespaces/{NS}/batch", json={"ops": ops}
        )
        assert status == 200 and all("value" in r for r in body["results"]), (status, body)
        values.update({r["name"]: r["value"] for r in body["results"]})
    # Every acknowledged increment survived; unacknowledged ones may have applied too.
    assert all(values[name] >= acked[name] for name in NAMES), [
        (name, values[name], acked[name]) for name in NAMES if values[name] < acked[name]
    ][:5]


async def test_sigterm_with_its_peers_paused_still_exits_cleanly(cluster: Cluster):
    """A node whose peers stopped answering (paused, or stopping themselves) must not wait
    out a long close handshake on each peer link: terminate() gives it 10 s."""
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "paused-peers", 3)
    assert status == 200, body
    for peer in nodes[1:]:
        peer.pause()
    assert nodes[0].terminate() == 0, nodes[0].log_tail()

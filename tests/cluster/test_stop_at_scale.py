"""Many counters, one node: SIGTERM right after the last acknowledged write exits cleanly
and keeps every acknowledged increment, and a restart that loads them does not write them
all back (issue 13: with a million counters that write-back took a minute of CPU after
every start and delayed the next stop past an orchestrator's grace period). Figures at a
million counters: loadtest/bench_scale.py."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.cluster.harness import Cluster, Node

NS = "scale"
COUNT = 20_000
BATCH = 1_000
CLIENTS = 4
BACKLOG = "counters_persistence_backlog"


def _name(index: int) -> str:
    return f"c{index:05d}"


async def _batches(cluster: Cluster, node: Node, ops_of: Any, acknowledged: dict[str, int]) -> None:
    """Every counter once, in batches of BATCH from CLIENTS concurrent clients; records
    the value each op was acknowledged with."""
    starts = iter(range(0, COUNT, BATCH))

    async def client() -> None:
        for start in starts:
            ops = [ops_of(i) for i in range(start, start + BATCH)]
            status, body = await cluster.request(
                "POST", node, f"/v1/namespaces/{NS}/batch", json={"ops": ops}
            )
            assert status == 200, body
            for result in body["results"]:
                assert "value" in result, result
                acknowledged[result["name"]] = result["value"]

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def _backlog(cluster: Cluster, node: Node) -> float:
    status, text = await cluster.request("GET", node, "/metrics")
    assert status == 200, text
    [line] = [line for line in text.splitlines() if line.startswith(BACKLOG + " ")]
    return float(line.split()[1])


async def test_sigterm_after_the_last_write_keeps_every_counter_and_a_restart_rewrites_none(
    cluster: Cluster,
):
    cluster.settings["COUNTERS_RATE_LIMIT_PER_S"] = "0"  # one tenant, flat out
    [node] = await cluster.start(1)
    acknowledged: dict[str, int] = {}

    def created(i: int) -> dict[str, Any]:
        return {"op": "increment", "name": _name(i), "delta": 1 + i % 5}

    def bumped(i: int) -> dict[str, Any]:
        return {"op": "increment", "name": _name(i), "delta": 1}

    await _batches(cluster, node, created, acknowledged)
    await _batches(cluster, node, bumped, acknowledged)
    assert acknowledged == {_name(i): 2 + i % 5 for i in range(COUNT)}
    # At once: the last flush must carry whatever the write-behind had not written yet.
    assert node.terminate() == 0, node.log_tail()  # within terminate()'s 10 s

    # A long write-behind interval: whatever the load marked as changed stays in sight.
    node.start([], COUNTERS_PERSIST_INTERVAL_S="60")
    await cluster.wait_ready(node)
    read: dict[str, int] = {}
    await _batches(cluster, node, lambda i: {"op": "get", "name": _name(i)}, read)
    lost = {
        name: (read[name], value) for name, value in acknowledged.items() if read[name] != value
    }
    assert not lost, list(lost.items())[:5]
    # Loaded counters are not changes: none waits to be written back.
    assert await _backlog(cluster, node) == 0
    assert node.terminate() == 0, node.log_tail()

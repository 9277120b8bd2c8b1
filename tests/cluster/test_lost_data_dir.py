"""A node that comes back with an empty data dir must not take writes under an old actor id.

The scenario of issue 11: with the embedded store (no Redis) the data dir holds both the
incarnation and the node's durable copy, so a lost disk loses every record of the node's
past on that machine. Only the peers remember it, and the one holding the highest slot is
paused when the node comes back.
"""

from __future__ import annotations

import shutil
from typing import Any

from tests.cluster.harness import Cluster, Node, eventually

NS = "lostdisk"
NAME = "c"


async def _write(cluster: Cluster, node: Node, count: int, **query: str) -> None:
    for _ in range(count):
        status, body = await cluster.increment(node, NS, NAME, 1, **query)
        assert status == 200, (status, body)


async def _readiness(cluster: Cluster, node: Node) -> tuple[int, Any]:
    return await cluster.get(node, "/readyz")


async def test_a_node_back_with_an_empty_data_dir_never_reuses_its_actor_slot(cluster: Cluster):
    n1, n2, n3 = await cluster.start(3)
    await _write(cluster, n2, 50, consistency="all")  # n2:1 = 50 on every node
    n1.pause()
    await cluster.wait_marked_down(n2, n1)  # so the next writes are not even sent to n1
    await _write(cluster, n2, 10)  # n2:1 = 60 on n2 and n3 only

    async def n3_holds_60() -> bool:
        return await cluster.value(n3, NS, NAME) == 60

    await eventually(n3_holds_60, "n3 to hold 60", 10)
    n3.pause()
    n2.kill()
    shutil.rmtree(cluster.root / n2.node_id)  # incarnation, ring and SQLite copy gone
    n1.resume()
    n2.start(cluster.seeds())

    # n2 hears from n1 (which remembers n2:1 at 50) but not from n3 (which holds n2:1 at
    # 60): it must not become ready as n2:1, and it cannot know n3 holds nothing newer.
    async def ready_or_refusing() -> str | None:
        status, body = await _readiness(cluster, n2)
        if status == 200:
            return "ready"
        reasons = body.get("reasons", []) if isinstance(body, dict) else []
        return next((r for r in reasons if "waiting to hear from" in r), None)

    outcome = await eventually(ready_or_refusing, "n2 ready, or waiting to prove its incarnation")
    acknowledged = 60
    if outcome == "ready":  # only safe under a fresh actor id; the old code came here
        await _write(cluster, n2, 5)
        acknowledged += 5
    else:  # it waits for exactly the member it has not heard from
        assert "waiting to hear from n3, which may hold" in outcome, outcome
    n3.resume()
    await cluster.wait_ready(n2)
    await _write(cluster, n2, 5)
    acknowledged += 5
    await cluster.converged(NS, {NAME: acknowledged}, [n1, n2, n3])
    incarnation = (cluster.root / n2.node_id / "incarnation").read_text().strip()
    assert int(incarnation) >= 2, incarnation

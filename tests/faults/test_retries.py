"""Exactly-once under coordinator faults (issue 11): see tests/faults/retries.py.

Expected to fail until the fencing of keyed ops lands: a coordinator paused or cut off after
applying an op is not fenced, so a retry elsewhere can apply it a second time.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from tests.faults.retries import (
    PREFIX,
    RetryingClients,
    agreed_values,
    coordinator,
    counter_coordinated_by,
    fault_node,
)
from tests.faults.run import running_cluster, seed_from_env

FAULT_S = 5.0  # seconds each coordinator fault lasts: past failure detection (1.5 s)
QUIET_S = 2.0  # seconds of load after each heal
FINISH_BOUND_S = 60.0  # seconds to get every key acknowledged after the faults
AGREE_BOUND_S = 30.0  # seconds for every node to read the final value
# Group commit: a frame waits this long for more updates (a setting users may choose), which
# leaves each applied op that long on its coordinator alone, where a fault can catch it.
REPLICATION_WINDOW_S = "0.1"
WORKERS = 8  # clients, each with one op in flight: more ops for a fault to catch


@pytest.mark.faults_full  # a minute of faults: `make faults`, beside the whole schedule
@pytest.mark.timeout(300)
async def test_retried_keyed_increments_apply_exactly_once(tmp_path: Path) -> None:
    seed = seed_from_env()
    kinds = ["pause", "kill", "isolate"] * 2
    random.Random(seed).shuffle(kinds)
    print(f"FAULTS_SEED={seed}: coordinator faults {kinds}", flush=True)
    async with (
        aiohttp.ClientSession() as session,
        running_cluster(
            tmp_path, 3, session, COUNTERS_REPLICATION_WINDOW_S=REPLICATION_WINDOW_S
        ) as (cluster, drops, _servers),
    ):
        ring = await cluster.ring(cluster.node(0))
        target = coordinator(ring, f"{PREFIX}-warm-up")
        phases = {}  # counter -> the fault its keys saw
        clients = RetryingClients(cluster, seed, workers=WORKERS)
        clients.start()
        try:
            for number, kind in enumerate(kinds):
                clients.counter = counter_coordinated_by(ring, target, f"{number}-{kind}")
                phases[clients.counter] = f"{kind} {target}"
                await asyncio.sleep(QUIET_S)
                await fault_node(cluster, drops, target, kind, FAULT_S)
            await asyncio.sleep(QUIET_S)
        finally:
            await clients.stop()
            drops.heal()
        for node in cluster.nodes.values():
            await cluster.wait_ready(node, timeout=60.0)
        left = await clients.finish(FINISH_BOUND_S)
        assert not left, f"{len(left)} keys never acknowledged, e.g. {left[:3]}"
        expected = clients.expected()
        seen = await agreed_values(cluster, expected, AGREE_BOUND_S)
    retried = [op for op in clients.ops if op.attempts > 1]
    wrong = []
    for name, total in expected.items():
        reads = seen[name]
        if len(reads) != len(cluster.nodes) or set(reads.values()) != {total}:
            off = sorted({value - total for value in reads.values()})
            wrong.append(f"{phases.get(name, 'warm-up')}: expected {total}, read {reads} ({off})")
    print(
        f"{len(clients.ops)} keys on {len(expected)} counters coordinated by {target}, "
        f"{len(retried)} retried; "
        f"{len(wrong)} counters wrong",
        flush=True,
    )
    assert not wrong, (
        f"FAULTS_SEED={seed}: every key was acknowledged at least once, so each counter must "
        f"equal the sum of its deltas; off (positive: applied twice) after:\n" + "\n".join(wrong)
    )

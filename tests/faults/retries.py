"""Jepsen-style exactly-once check of keyed increments (issue 11): retries never double.

Clients send increments, each with an Idempotency-Key of its own, to the counter of the
current phase (one counter per fault, all coordinated by the same node, so a mismatch names
the fault that caused it). An op that
is not acknowledged (a timeout, a 5xx, a refused connection) is retried with the SAME key and
delta on the next node, while the nemesis pauses (SIGSTOP), kills -9 (then restarts) or
isolates the counter's coordinator (the first node of its shard's preference list). After
every fault heals, each key still unacknowledged is retried until it is (bounded). Then every
key has been acknowledged at least once, so each counter must equal the sum of its deltas,
exactly: more means an op applied twice (an unfenced coordinator's late slot merged with the
retry's), less means an acknowledged op was lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ring.hashing import key_hash
from tests.faults import drops
from tests.faults.cluster import FaultCluster
from tests.faults.workload import NAMESPACE, Outcome, send

PREFIX = "exactly-once"
TENANT = "default"  # the tenant of every request under --auth none
RETRY_PAUSE_S = 0.05


@dataclass
class KeyedOp:
    counter: str
    key: str
    delta: int
    attempts: int = 0
    acknowledged: bool = False
    nodes: list[str] = field(default_factory=list)  # where each attempt went


class RetryingClients:
    """`workers` clients, each sending one keyed op at a time and retrying it elsewhere."""

    def __init__(self, cluster: FaultCluster, seed: int, workers: int = 4) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.workers = workers
        self.ops: list[KeyedOp] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seed = seed
        self.counter = f"{PREFIX}-warm-up"  # where new ops go; the test moves it per fault

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, index: int) -> None:
        nodes = list(self.cluster.nodes.values())
        turn = index
        serial = 0
        while not self._stop.is_set():
            serial += 1
            op = KeyedOp(self.counter, f"{self._seed}-{index}-{serial}", self.rng.randint(1, 9))
            self.ops.append(op)
            while not op.acknowledged and not self._stop.is_set():
                turn += 1  # a retry goes to another node
                await self.attempt(op, nodes[turn % len(nodes)].node_id)
                if not op.acknowledged:
                    await asyncio.sleep(RETRY_PAUSE_S)

    async def attempt(self, op: KeyedOp, node_id: str) -> None:
        node = self.cluster.nodes[node_id]
        assert self.cluster.session is not None
        record = await send(
            self.cluster.session, node, "quorum", op.counter, op.delta, True, key=op.key
        )
        op.attempts += 1
        op.nodes.append(node_id)
        if record.outcome is Outcome.OK:
            op.acknowledged = True

    async def finish(self, bound_s: float) -> list[KeyedOp]:
        """Retry every unacknowledged key (each on the nodes in turn) until it is
        acknowledged or `bound_s` pass; the keys still unacknowledged."""
        deadline = time.monotonic() + bound_s
        nodes = list(self.cluster.nodes)
        turn = 0
        while time.monotonic() < deadline:
            left = [op for op in self.ops if not op.acknowledged]
            if not left:
                return []
            for op in left:
                turn += 1
                await self.attempt(op, nodes[turn % len(nodes)])
            await asyncio.sleep(0.2)
        return [op for op in self.ops if not op.acknowledged]

    def expected(self) -> dict[str, int]:
        """Per counter, the sum of its ops' deltas."""
        totals: dict[str, int] = {}
        for op in self.ops:
            totals[op.counter] = totals.get(op.counter, 0) + op.delta
        return totals


def coordinator(ring: dict[str, Any], name: str) -> str:
    """The node that coordinates counter `name`: its shard's first replica."""
    shard = key_hash(TENANT, NAMESPACE, name) & (int(ring["shards"]) - 1)
    return str(ring["preference_lists"][shard][0])


def counter_coordinated_by(ring: dict[str, Any], node_id: str, label: str) -> str:
    """A counter name with `label` in it whose coordinator is `node_id`."""
    for attempt in range(10_000):
        name = f"{PREFIX}-{label}-{attempt}"
        if coordinator(ring, name) == node_id:
            return name
    raise AssertionError(f"no counter name coordinated by {node_id} in 10000 tries")


async def fault_node(
    cluster: FaultCluster, network_drops: drops.Drops, node_id: str, kind: str, fault_s: float
) -> None:
    """Pause, kill -9 (and restart) or isolate a node for fault_s."""
    index = list(cluster.nodes).index(node_id)
    node = cluster.node(index)
    if kind == "pause":
        node.pause()
        await asyncio.sleep(fault_s)
        node.resume()
    elif kind == "kill":
        node.kill()
        await asyncio.sleep(fault_s)
        node.restart()
    elif kind == "isolate":
        network_drops.block(drops.isolate(index, len(cluster.nodes)))
        await asyncio.sleep(fault_s)
        network_drops.heal()
    else:
        raise ValueError(f"unknown coordinator fault {kind!r}")


async def agreed_values(
    cluster: FaultCluster, expected: dict[str, int], bound_s: float
) -> dict[str, dict[str, int]]:
    """Per counter, each node's quorum read, once they all read what is expected (or the
    last reads seen, when `bound_s` pass first)."""
    deadline = time.monotonic() + bound_s
    seen: dict[str, dict[str, int]] = {name: {} for name in expected}
    while time.monotonic() < deadline:
        for name in expected:
            path = f"/v1/namespaces/{NAMESPACE}/counters/{name}?consistency=quorum"
            for node_id, node in cluster.nodes.items():
                try:
                    status, body = await cluster.get(node, path)
                except (TimeoutError, OSError, aiohttp.ClientError):
                    continue
                if status == 200:
                    seen[name][node_id] = int(body["value"])
        if all(
            len(reads) == len(cluster.nodes) and set(reads.values()) == {expected[name]}
            for name, reads in seen.items()
        ):
            break
        await asyncio.sleep(0.2)
    return seen

"""Real nodes: a replica that missed writes converges while the counter keeps being written.

n3 is paused (SIGSTOP) until the others route around it, and n2 increments the counter
meanwhile; after n3 resumes, n1 goes on incrementing the same counter without pause. n3
must get n2's slot within a few gossip rounds, though neither it nor any peer ever stands
still on that counter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from crdt import PNCounter
from node.base.config import Config
from node.cluster import peer_auth, wire
from node.cluster.links import PEER_PATH
from tests.cluster.harness import Cluster, Node
from tests.support import eventually

NS = "entropy"
NAME = "hot"
KEY = ("default", NS, NAME)
ROUNDS = 15  # gossip rounds of n3 the repair may take (3 s at the harness's 0.2 s)


async def _state(cluster: Cluster, node: Node) -> PNCounter:
    """The node's own replica of the counter, read as a peer would (a READ with no share)."""
    headers = peer_auth.sign(Config.cluster_secret, "GET", PEER_PATH, "tester", node.address)
    seal = peer_auth.client_seal(Config.cluster_secret, headers, node.address)
    assert cluster.session is not None
    async with cluster.session.ws_connect(node.url + PEER_PATH, headers=headers) as ws:
        await ws.send_bytes(seal.seal(wire.encode(wire.READ, 1, [[list(KEY), 0]])))
        reply = wire.decode(seal.open(await ws.receive_bytes(timeout=5)))[2]
    ok, states = reply
    assert ok, reply
    (state,) = wire.states_from_wire(states, 1)
    return state or PNCounter.empty()


def _slots_of(state: PNCounter, node_id: str) -> dict[str, tuple[int, int]]:
    actors = [a for a in (*state.p.slots, *state.n.slots) if a.startswith(f"{node_id}:")]
    return {actor: state.slot(actor) for actor in actors}


async def _rounds(cluster: Cluster, node: Node) -> float:
    status, text = await cluster.get(node, "/metrics")
    assert status == 200, text
    for line in str(text).splitlines():
        if line.startswith("counters_gossip_rounds_total "):
            return float(line.split()[1])
    raise AssertionError("no counters_gossip_rounds_total in /metrics")


async def _up(cluster: Cluster, observer: Node, node: Node) -> bool:
    ring = await cluster.ring(observer)
    return any(m["node_id"] == node.node_id and m["status"] == "up" for m in ring["members"])


@contextlib.asynccontextmanager
async def _steady_writes(cluster: Cluster, node: Node) -> AsyncIterator[list[int]]:
    """Increment the counter through node, one request after another, until the block ends;
    yields a one-item list counting the increments acknowledged."""
    acknowledged = [0]

    async def write() -> None:
        while True:
            status, body = await cluster.increment(node, NS, NAME, 1)
            assert status == 200, (status, body)
            acknowledged[0] += 1

    task = asyncio.create_task(write())
    try:
        yield acknowledged
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_replica_that_missed_writes_converges_while_writes_continue(cluster: Cluster):
    n1, n2, n3 = await cluster.start(3)
    n3.pause()
    await cluster.wait_marked_down(n1, n3)
    await cluster.wait_marked_down(n2, n3)
    for _ in range(20):  # n2's slot, which n3 never sees: n2 routes around it
        status, body = await cluster.increment(n2, NS, NAME, 2)
        assert status == 200, body
    wanted = _slots_of(await _state(cluster, n2), "n2")
    assert sum(p for p, _ in wanted.values()) == 40

    async with _steady_writes(cluster, n1) as acknowledged:
        n3.resume()
        start = await _rounds(cluster, n3)

        async def repaired_or_too_late() -> bool:
            if _slots_of(await _state(cluster, n3), "n2") == wanted:
                return True
            return await _rounds(cluster, n3) > start + ROUNDS

        await eventually(repaired_or_too_late, f"n3 repaired or {ROUNDS} rounds gone", 30)
        held = _slots_of(await _state(cluster, n3), "n2")
        assert held == wanted, f"after {ROUNDS} rounds and {acknowledged[0]} writes n3 holds {held}"
        await eventually(lambda: _up(cluster, n1, n3), "n1 to see n3 up again", 10)
    await cluster.agreed(NS, [NAME], [n1, n2, n3])

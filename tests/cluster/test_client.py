"""counters-client against real node processes: a Zipf stream of add() through a kill -9
and restart loses and doubles nothing; the client follows a join and a leave; add()
batches larger than the tenant's rate-limit burst are split until they pass."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

from counters_client import AsyncClient, errors

from loadtest.zipf import cumulative, rank
from node.http.auth import READ, WRITE
from tests.cluster.harness import Cluster, Node
from tests.support import bearer, client_token, eventually

NS = "clientns"
SECRET = "client-test-secret-" * 4


class Ledger:
    """What was added and what the client reported acknowledged, per counter."""

    def __init__(self) -> None:
        self.added: collections.Counter[str] = collections.Counter()
        self.acknowledged: collections.Counter[str] = collections.Counter()
        self.failed: list[tuple[str, int, errors.CountersError]] = []

    def listen(self, namespace: str, ops: list[tuple[str, int, int, Any]]) -> None:
        for name, delta, _adds, outcome in ops:
            if outcome is None:
                self.acknowledged[name] += delta
            else:
                self.failed.append((name, delta, outcome))


async def _stream(client: AsyncClient, ledger: Ledger, stop: asyncio.Event, names: int) -> None:
    """add() of Zipf-picked counters (s = 1.1), about 2,000 a second, until `stop`: few
    enough that the nodes keep up on a shared 2-core machine."""
    table = cumulative(names, 1.1)
    draw = random.Random(11).random
    while not stop.is_set():
        for _ in range(20):
            name = f"z{rank(table, draw())}"
            delta = 1 if draw() < 0.9 else -1
            client.add(NS, name, delta)
            ledger.added[name] += delta
        await asyncio.sleep(0.01)


async def _exact(client: AsyncClient, ledger: Ledger) -> None:
    assert not ledger.failed, ledger.failed[:5]
    assert ledger.acknowledged == ledger.added  # every add acknowledged, nothing else
    names = sorted(ledger.added)
    values = await client.get_many(NS, names, consistency="all")
    wrong = {n: (values[n], ledger.acknowledged[n]) for n in names if values[n] != ledger.added[n]}
    assert not wrong, f"(value, acknowledged) differ for {len(wrong)}: {list(wrong.items())[:5]}"


async def _run_while(client: AsyncClient, ledger: Ledger, seconds: float, names: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(_stream(client, ledger, stop, names))
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.set()
        await task


async def test_add_through_a_kill_and_restart_is_exact(cluster: Cluster) -> None:
    cluster.settings.update(COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET)
    nodes = await cluster.start(3)
    token = client_token(SECRET, "acme", (READ, WRITE))
    ledger = Ledger()
    async with AsyncClient(
        [node.url for node in nodes],
        token,
        flush_interval_ms=50,
        deadline_s=40,
        listener=ledger.listen,
    ) as client:
        assert client.topology.tenant == "acme"  # learnt from the token, via /v1/topology
        for headers, expected in (({}, 401), (bearer(SECRET, "acme", (WRITE,)), 403)):
            status, body = await cluster.request("GET", nodes[0], "/v1/topology", headers=headers)
            assert status == expected and body["type"].startswith("/problems/"), body
        await _run_while(client, ledger, 1.0, 300)
        victim = nodes[1]
        # Kill it with batches in flight to it: the ones it applied but did not answer are
        # what a retry under a fresh key would count twice.
        stop = asyncio.Event()
        stream = asyncio.create_task(_stream(client, ledger, stop, 300))
        try:
            await eventually(
                lambda: client.transport.tally.in_flight.get(victim.url), "a batch at n2", 10, 0
            )
            victim.kill()
        finally:
            stop.set()
            await stream
        await _run_while(client, ledger, 1.0, 300)
        victim.start(cluster.seeds())
        # Batches the victim had taken stay in doubt until it is back (a retry may not
        # apply them elsewhere while it cannot say whether it did): the stream goes on.
        stop = asyncio.Event()
        stream = asyncio.create_task(_stream(client, ledger, stop, 300))
        try:
            await cluster.wait_ready(victim)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await stream
        await client.flush()
        assert client.stats.failed == 0 and client.stats.added == client.stats.acknowledged
        assert client.buffered == 0
        assert client.transport.tally.retries > 0  # the kill was felt, and retried through
        await _exact(client, ledger)
        # every node's own replica holds them too (a sample: the hottest counters)
        hottest = [name for name, _ in ledger.added.most_common(5)]
        headers = bearer(SECRET, "acme", (READ,))

        async def agreed() -> bool:
            for node in nodes:
                for name in hottest:
                    path = f"/v1/namespaces/{NS}/counters/{name}?consistency=one"
                    status, body = await cluster.request("GET", node, path, headers=headers)
                    if status != 200 or body["value"] != ledger.added[name]:
                        return False
            return True

        await eventually(agreed, "every node to hold the acknowledged totals", 20)


async def _served(node: Node, cluster: Cluster) -> int:
    """Batch requests this node has answered (its /metrics)."""
    assert cluster.session is not None
    async with cluster.session.get(node.url + "/metrics") as response:
        text = await response.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("counters_http_requests_total") and "/batch" in line
    )


async def test_the_client_follows_a_join_and_a_leave(cluster: Cluster) -> None:
    nodes = await cluster.start(3)
    ledger = Ledger()
    # A long map interval: the epoch in replies tells the client the ring moved (and a map
    # with a member joining or leaving is read again every second until it settles).
    async with AsyncClient(
        nodes[0].url, flush_interval_ms=50, topology_interval_s=3600, listener=ledger.listen
    ) as client:
        stop = asyncio.Event()
        stream = asyncio.create_task(_stream(client, ledger, stop, 300))
        try:
            await _join_and_leave(cluster, nodes, client)
        finally:
            stop.set()
            await stream
        await client.flush()
        await _exact(client, ledger)


async def _join_and_leave(cluster: Cluster, nodes: list[Node], client: AsyncClient) -> None:
    """A fourth node joins, then n2 leaves and stops; the client routes by each new map."""
    fourth = cluster.add("n4")
    fourth.start(cluster.seeds())
    await cluster.wait_ready(fourth)
    ring = await cluster.settled_ring([*nodes, fourth], {"n1", "n2", "n3", "n4"})

    def follows(ring: dict[str, Any]) -> bool:
        topology = client.topology
        return topology.epoch == ring["epoch"] and topology.preference_lists == tuple(
            tuple(entry) for entry in ring["preference_lists"]
        )

    await eventually(lambda: follows(ring), "the client to learn the join", 10)
    assert client.topology.urls["n4"] == fourth.url
    await eventually(
        lambda: _served(fourth, cluster),
        "batches sent to the new node",
        10,
        show=lambda: (client.topology.status, client.topology.epoch),
    )

    status, body = await cluster.request("DELETE", nodes[0], "/admin/nodes/n2")
    assert status == 202, body
    stayers = [nodes[0], nodes[2], fourth]
    ring = await cluster.settled_ring(stayers, {"n1", "n3", "n4"})
    await eventually(lambda: follows(ring), "the client to learn the leave", 10)
    assert all("n2" not in entry for entry in client.topology.preference_lists)
    nodes[1].terminate()  # gone: the client must not need it
    await asyncio.sleep(0.5)


async def test_add_batches_past_the_rate_limit_burst_are_acknowledged(cluster: Cluster) -> None:
    """A tenant whose rate-limit burst is below max_batch loses no add(): the node refuses
    a batch costing more than the burst (429 without Retry-After: no retry helps, nothing
    applied) and the client sends it again in halves, each under a new key."""
    cluster.settings.update(COUNTERS_RATE_LIMIT_PER_S="1000", COUNTERS_RATE_LIMIT_BURST="50")
    [node] = await cluster.start(1)
    async with AsyncClient(node.url, deadline_s=3, backoff_cap_s=0.2) as client:
        for i in range(120):  # 120 distinct counters: one flush takes them as one batch
            client.add("rl", f"c{i}")
        failure: errors.CountersError | None = None
        try:
            await asyncio.wait_for(client.flush(), 20)
        except errors.CountersError as error:
            failure = error
        stats = client.stats
        summary = (stats.added, stats.acknowledged, stats.failed, stats.failed_unknown)
        # every add was valid and the node's rate (1000/s) allows 120 ops within 3 s
        assert failure is None and summary == (120, 120, 0, 0), (summary, repr(failure))
        names = [f"c{i}" for i in range(0, 120, 3)]  # 40 reads: within the burst
        assert await client.get_many("rl", names) == dict.fromkeys(names, 1)

"""A three-node cluster counts exactly, through a node's death and a peer's long pause."""

from __future__ import annotations

import asyncio

from crdt import PNCounter
from node.base.config import Config
from node.cluster import peer_auth, wire
from node.cluster.links import PEER_PATH
from tests.cluster.harness import Cluster, Node
from tests.cluster.write_stream import WriteStream

NS = "clustertest"


async def test_increments_spread_over_nodes_read_back_exactly_everywhere(cluster: Cluster):
    nodes = await cluster.start(3)
    expected: dict[str, int] = {"views": 0, "likes": 0, "shares": 0}
    requests = []
    for i in range(90):
        name = list(expected)[i % 3]
        delta = (i % 7) - 2  # negative deltas decrement
        expected[name] += delta
        requests.append(cluster.increment(nodes[i % 3], NS, name, delta))
    replies = await asyncio.gather(*requests)
    assert all(status == 200 for status, _ in replies), replies
    for node in nodes:  # a quorum read sees every acknowledged write at once
        for name, total in expected.items():
            assert await cluster.value(node, NS, name, consistency="quorum") == total
    await cluster.converged(NS, expected, nodes)


async def test_consistency_levels_are_reported_and_all_needs_every_replica(cluster: Cluster):
    nodes = await cluster.start(3)
    status, body = await cluster.increment(nodes[0], NS, "c", 4, consistency="all")
    assert status == 200 and (body["value"], body["consistency"]) == (4, "all"), (status, body)
    status, body = await cluster.get(nodes[1], f"/v1/namespaces/{NS}/counters/c?consistency=one")
    assert status == 200 and body["consistency"] == "one", (status, body)
    nodes[2].kill()
    await cluster.wait_marked_down(nodes[0], nodes[2])
    status, body = await cluster.increment(nodes[0], NS, "c", 1, consistency="all")
    assert status == 503 and body["may_have_applied"] is False, (status, body)
    assert await cluster.value(nodes[0], NS, "c", "quorum") == 4  # the refusal changed nothing
    status, body = await cluster.increment(nodes[0], NS, "c", 1, consistency="quorum")
    assert status == 200 and body["value"] == 5, (status, body)


async def test_kill_9_mid_stream_loses_no_acknowledged_write(cluster: Cluster):
    nodes = await cluster.start(3)
    names = [f"k{i}" for i in range(12)]
    stream = WriteStream(cluster, NS, names)
    stream.start(nodes)
    await stream.run_until(150)
    victim = nodes[2]
    victim.kill()
    await stream.run_until(300)  # quorum writes keep succeeding with one replica dead
    victim.start(cluster.seeds())
    await cluster.wait_ready(victim)
    await stream.run_until(100)
    await stream.stop()
    await stream.check_totals(nodes[0])
    await cluster.converged(NS, stream.totals, nodes)  # the restarted node holds them too
    status, members = await cluster.get(nodes[0], "/admin/nodes")
    assert status == 200
    versions = {m["node_id"]: m["version"] for m in members["nodes"]}
    assert versions[victim.node_id] > versions[nodes[0].node_id]  # a new incarnation


async def test_paused_peer_catches_up_after_sigcont(cluster: Cluster):
    nodes = await cluster.start(3)
    names = ["p1", "p2", "p3"]
    stream = WriteStream(cluster, NS, names)
    stream.start(nodes[:2])
    sleeper = nodes[2]
    sleeper.pause()
    await stream.run_until(200)  # longer than the failure timeout: the peer is marked down

    await cluster.wait_marked_down(nodes[0], sleeper)
    sleeper.resume()
    await stream.run_until(50)
    await stream.stop()
    await stream.check_totals(nodes[0])
    await cluster.converged(NS, stream.totals, nodes)


async def _push_to_one_node(cluster: Cluster, node: Node, name: str, state: PNCounter) -> None:
    """Act as a peer and hand one node a state no other replica has."""
    headers = peer_auth.sign(Config.cluster_secret, "GET", PEER_PATH, "tester", node.address)
    seal = peer_auth.client_seal(Config.cluster_secret, headers, node.address)
    async with cluster.session.ws_connect(node.url + PEER_PATH, headers=headers) as ws:
        entries = wire.entries_to_wire([(("default", NS, name), state)])
        await ws.send_bytes(seal.seal(wire.encode(wire.PUSH, 1, entries)))
        reply = await ws.receive_bytes(timeout=5)
        assert wire.decode(seal.open(reply))[2] == [True, None]


async def test_anti_entropy_spreads_a_lone_slot_while_other_writes_go_on(cluster: Cluster):
    nodes = await cluster.start(3)
    busy = WriteStream(cluster, NS, [f"h{i}" for i in range(400)])  # nearly every shard moves
    busy.start(nodes)
    await busy.run_until(200)
    await _push_to_one_node(cluster, nodes[2], "lone", PNCounter.from_slot("ghost:1", 7, 2))
    assert await cluster.value(nodes[0], NS, "lone") == 0
    await cluster.converged(NS, {"lone": 5}, nodes)  # gossip alone carried it, under load
    await busy.stop()


async def test_a_batch_spanning_several_coordinators_answers_every_op_in_order(cluster: Cluster):
    nodes = await cluster.start(4)  # with N=3 of 4, many shards have no replica on n1
    ops = [{"op": "increment", "name": f"b{i}", "delta": i + 1} for i in range(40)]
    ops.append({"op": "get", "name": "b3"})
    status, body = await cluster.request(
        "POST", nodes[0], f"/v1/namespaces/{NS}/batch", json={"ops": ops}
    )
    assert status == 200, body
    assert [r["name"] for r in body["results"]] == [op["name"] for op in ops], body
    assert [r.get("value") for r in body["results"]] == [*(i + 1 for i in range(40)), 4], body
    ring = await cluster.ring(nodes[0])
    assert any("n1" not in entry for entry in ring["preference_lists"])  # it did forward
    for i in (0, 17, 39):
        assert await cluster.value(nodes[3], NS, f"b{i}", "quorum") == i + 1

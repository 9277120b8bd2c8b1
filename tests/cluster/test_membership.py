"""Nodes join, leave and get removed while writes go on; totals stay exact everywhere."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.cluster.harness import Cluster, eventually
from tests.cluster.write_stream import WriteStream

NS = "membership"


async def test_join_then_leave_during_writes_keeps_totals_exact(cluster: Cluster):
    nodes = await cluster.start(3)
    names = [f"c{i}" for i in range(20)]
    stream = WriteStream(cluster, NS, names)
    stream.start(nodes)
    await stream.run_until(100)

    fourth = cluster.add("n4")
    fourth.start(cluster.seeds())  # joins by itself through its seeds
    await cluster.wait_ready(fourth)
    ring = await cluster.settled_ring([*nodes, fourth], {"n1", "n2", "n3", "n4"})
    assert ring["shards_per_node"]["n4"] >= 256 * 3 // 4 * 0.8
    assert all(len(entry) == 3 for entry in ring["preference_lists"])
    stream.targets.append(fourth)
    await stream.run_until(100)

    leaver = nodes[1]
    status, body = await cluster.request("DELETE", nodes[0], f"/admin/nodes/{leaver.node_id}")
    assert status == 202 and body["status"] == "leaving", body
    stayers = [nodes[0], nodes[2], fourth]
    ring = await cluster.settled_ring(stayers, {"n1", "n3", "n4"})  # one placement everywhere
    assert all(leaver.node_id not in entry for entry in ring["preference_lists"])
    stream.targets.remove(leaver)
    await stream.run_until(100)
    await stream.stop()
    stream.assert_mostly_acknowledged()  # a join or a leave must not turn writes away
    await stream.check_totals(nodes[0])

    await cluster.converged(NS, stream.totals, stayers)


async def test_force_remove_of_a_dead_node_rebuilds_its_replicas(cluster: Cluster):
    nodes = await cluster.start(4)
    expected = {f"f{i}": i + 1 for i in range(10)}
    for name, delta in expected.items():
        status, body = await cluster.increment(nodes[0], NS, name, delta, consistency="all")
        assert status == 200, body
    dead = nodes[3]
    dead.kill()
    await cluster.wait_marked_down(nodes[0], dead)
    status, body = await cluster.request("DELETE", nodes[0], "/admin/nodes/n4?force=true")
    assert status == 202 and body["status"] == "removed", body
    ring = await cluster.settled_ring(nodes[:3], {"n1", "n2", "n3"})
    assert ring["shards_per_node"] == {"n1": 256, "n2": 256, "n3": 256}
    await cluster.converged(NS, expected, nodes[:3])

    async def link_closed() -> bool:  # no connection to, nor gossip with, a removed node
        async with cluster.session.get(nodes[0].url + "/metrics") as response:
            text = await response.text()
        return 'counters_replication_frames_total{peer="n4"}' not in text

    await eventually(link_closed, "n1 to close its link to the removed n4", 10)


async def test_admin_add_node_by_address_admits_an_empty_node(cluster: Cluster):
    nodes = await cluster.start(3)
    status, _ = await cluster.increment(nodes[0], NS, "before", 7)
    assert status == 200
    loner = cluster.add("n9")
    loner.start([])  # no seeds: a cluster of one until an operator adds it
    await cluster.wait_ready(loner)
    status, body = await cluster.request(
        "POST", nodes[1], "/admin/nodes", json={"address": loner.address}
    )
    assert status == 202 and body["node_id"] == "n9", body
    await cluster.settled_ring([*nodes, loner], {"n1", "n2", "n3", "n9"})
    await cluster.wait_ready(loner)
    assert await cluster.value(loner, NS, "before", "quorum") == 7

    # A node that already holds counters of its own is refused, and nothing changes.
    other = cluster.add("n10")
    other.start([])
    await cluster.wait_ready(other)
    status, _ = await cluster.increment(other, NS, "mine", 1)
    assert status == 200
    status, body = await cluster.request(
        "POST", nodes[0], "/admin/nodes", json={"address": other.address}
    )
    assert status == 409, body
    ring = await cluster.ring(nodes[0])
    assert "n10" not in {m["node_id"] for m in ring["members"]}


async def test_a_leave_during_a_join_is_queued_behind_its_hand_off(cluster: Cluster):
    """A join and a leave at once would replace two of three replicas of some shards in one
    hand-off. The leave is accepted, the answer says it waits, and the pending ring moves
    one node at a time. The join is held up by a majority of the ring being paused: the
    switch waits for a majority of the current ring to adopt the pending one."""
    n1, n2, n3 = await cluster.start(3)
    n2.pause()
    n3.pause()
    joiner = cluster.add("n4")
    joiner.start(cluster.seeds())

    async def join_pending() -> dict[str, Any] | None:
        ring = await cluster.ring(n1)
        pending = ring["pending"]
        return ring if pending and "n4" in pending["shards_per_node"] else None

    before = await eventually(join_pending, "n1 to plan n4's join", 20)
    status, body = await cluster.request("DELETE", n1, "/admin/nodes/n2")
    assert status == 202 and body["status"] == "leaving", body
    assert body["queued"] and "one node at a time" in body["queued"], body
    during = await cluster.ring(n1)
    assert during["pending"]["checksum"] == before["pending"]["checksum"]  # not re-planned
    assert "n2" in during["pending"]["shards_per_node"]

    n2.resume()
    n3.resume()
    ring = await cluster.settled_ring([n1, n3, joiner], {"n1", "n3", "n4"}, timeout=60)
    assert all(len(entry) == 3 for entry in ring["preference_lists"])


async def test_leaves_sent_at_once_to_each_other_keep_the_ring_serving(cluster: Cluster):
    """Each node's admin API refuses to let the last live member go, but checks its own view:
    two leaves sent at once to two nodes, each of the other, both pass it. The ring keeps the
    leavers (before: it emptied, every counter answered 503) until a node joins."""
    n1, n2 = await cluster.start(2)
    status, body = await cluster.increment(n1, NS, "c", 5, consistency="all")
    assert status == 200, body
    answers = await asyncio.gather(
        cluster.request("DELETE", n1, "/admin/nodes/n2"),
        cluster.request("DELETE", n2, "/admin/nodes/n1"),
    )
    assert {status for status, _ in answers} <= {202, 409}, answers
    await asyncio.sleep(2)  # 10 gossip rounds: time enough to empty the ring, before
    for node in (n1, n2):
        ring = await cluster.ring(node)
        assert sum(ring["shards_per_node"].values()) == 256 * 2, ring["shards_per_node"]
        status, body = await cluster.request("GET", node, f"/v1/namespaces/{NS}/counters/c")
        assert (status, body.get("value")) == (200, 5), body


async def test_a_node_with_a_live_members_id_is_refused_admission(cluster: Cluster, tmp_path: Path):
    """A fresh node started by mistake with a live member's id, then added by address: it
    would take that member's place in every view (its entry is newer), cutting the member
    and its slots out of the cluster. Refused (409), the view unchanged."""
    n1, n2, n3 = await cluster.start(3)
    (tmp_path / "other").mkdir()
    other = Cluster(tmp_path / "other", cluster.session, **cluster.settings)
    twin = other.add("n2")
    twin.start([])
    try:
        await other.wait_ready(twin)
        answer = await cluster.request("POST", n1, "/admin/nodes", json={"address": twin.address})
        assert answer[0] == 409 and "n2" in answer[1]["detail"], answer
        await asyncio.sleep(1)  # 5 gossip rounds
        for node in (n1, n3):
            members = {m["node_id"]: m["address"] for m in (await cluster.ring(node))["members"]}
            assert members["n2"] == n2.address, members
    finally:
        await other.stop()

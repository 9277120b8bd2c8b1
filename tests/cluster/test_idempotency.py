"""Idempotency-Key: a retry applies nothing new and answers the first result, on any node,
even after the node that applied it died; a different request under a used key is 422."""

from __future__ import annotations

from typing import Any

from tests.cluster.harness import Cluster, Node

NS = "idem"


async def _increment(
    cluster: Cluster, node: Node, name: str, delta: int, key: str
) -> tuple[int, Any]:
    path = f"/v1/namespaces/{NS}/counters/{name}/increment"
    async with cluster.session.post(
        node.url + path, json={"delta": delta}, headers={"Idempotency-Key": key}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_a_retry_to_every_node_applies_once_and_answers_the_first_result(cluster: Cluster):
    nodes = await cluster.start(3)
    await cluster.increment(nodes[0], NS, "views", 10)
    first = await _increment(cluster, nodes[0], "views", 5, "order-1")
    assert first[0] == 200 and first[1]["value"] == 15, first
    await cluster.increment(nodes[1], NS, "views", 100)  # a later, different increment
    for node in nodes:
        for _ in range(2):
            status, body = await _increment(cluster, node, "views", 5, "order-1")
            assert status == 200 and body["value"] == 15, (status, body)  # the first answer, again
    for node in nodes:
        assert await cluster.value(node, NS, "views", "all") == 115


async def test_same_key_different_body_is_422_and_changes_nothing(cluster: Cluster):
    nodes = await cluster.start(3)
    status, body = await _increment(cluster, nodes[0], "likes", 1, "k-2")
    assert status == 200, body
    status, body = await _increment(cluster, nodes[2], "likes", 2, "k-2")
    assert status == 422 and body["type"].endswith("/idempotency-key-reused"), body
    status, body = await _increment(cluster, nodes[1], "likes", 1, "bad key with spaces")
    assert status == 400, body
    assert await cluster.value(nodes[1], NS, "likes", "all") == 1


async def test_the_receipt_outlives_the_node_that_applied_the_increment(cluster: Cluster):
    nodes = await cluster.start(3)
    status, body = await _increment(cluster, nodes[0], "shares", 7, "retry-me")
    assert status == 200 and body["value"] == 7, (status, body)
    ring = await cluster.ring(nodes[0])
    first = {m["node_id"]: m for m in ring["members"]}
    applied_by = _coordinator_of(ring, "shares")
    victim = next(n for n in nodes if n.node_id == applied_by)
    assert first[applied_by]["status"] == "up"
    victim.kill()
    survivors = [n for n in nodes if n is not victim]
    await cluster.wait_marked_down(survivors[0], victim)
    await cluster.wait_marked_down(survivors[1], victim)
    for node in survivors:
        status, body = await _increment(cluster, node, "shares", 7, "retry-me")
        assert status == 200 and body["value"] == 7, (status, body)
    assert await cluster.value(survivors[0], NS, "shares", "quorum") == 7


async def test_a_batch_under_a_key_applies_once_and_a_different_batch_is_refused(
    cluster: Cluster,
):
    nodes = await cluster.start(3)
    # Op i of batch "batch-1" keeps its receipt as "batch-1#i": a single op may not take it
    # first (it would leave op 0 refused alone while the rest of the batch applied).
    status, body = await _increment(cluster, nodes[0], "b0", 1, "batch-1#0")
    assert status == 400 and body["type"].endswith("/invalid-body"), body
    ops = [{"op": "increment", "name": f"b{i}", "delta": i + 1} for i in range(5)]
    headers = {"Idempotency-Key": "batch-1"}
    answers = []
    for node in nodes:
        async with cluster.session.post(
            f"{node.url}/v1/namespaces/{NS}/batch", json={"ops": ops}, headers=headers
        ) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, body
            answers.append(body["results"])
    assert [[r.get("value") for r in results] for results in answers] == [[1, 2, 3, 4, 5]] * 3, (
        answers
    )
    other = [{"op": "increment", "name": "b0", "delta": 50}]
    async with cluster.session.post(
        f"{nodes[1].url}/v1/namespaces/{NS}/batch", json={"ops": other}, headers=headers
    ) as response:
        assert response.status == 422
    for i in range(5):
        assert await cluster.value(nodes[2], NS, f"b{i}", "all") == i + 1


def _coordinator_of(ring: dict[str, Any], name: str) -> str:
    """The first replica of the counter's shard, computed as the nodes do."""
    from ring import key_hash

    shard = key_hash("default", NS, name) & (ring["shards"] - 1)
    return str(ring["preference_lists"][shard][0])


async def test_receipts_survive_a_restart_of_the_whole_cluster(cluster: Cluster):
    cluster.settings.update(COUNTERS_DURABILITY="sync")  # acknowledged means on disk
    nodes = await cluster.start(3)
    status, body = await _increment(cluster, nodes[1], "downloads", 3, "dl-9")
    assert status == 200 and body["value"] == 3, (status, body)
    for node in nodes:
        node.kill()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
        await cluster.wait_all_up(node, 3)
    for node in nodes:
        status, body = await _increment(cluster, node, "downloads", 3, "dl-9")
        assert status == 200 and body["value"] == 3, (status, body)
    assert await cluster.value(nodes[0], NS, "downloads", "all") == 3

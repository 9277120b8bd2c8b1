"""--durability sync, one node cut off from the shared Redis while its peers reach it: a peer
that says ready takes keyed increments on every key. The cut-off node says so in its gossip,
and the others pass over it as a coordinator (Cluster.coordinator) while another serving
replica can make a write durable; before, it stayed the coordinator of the shards it is
first replica of and refused them (503 on about a third of the keys), though two of three
replicas, a quorum, could write them and reach Redis.
"""

from __future__ import annotations

from tests.cluster.harness import Cluster, eventually
from tests.cluster.test_redis_owner_cut_off import start_with_n1_cut_off
from tests.integration.redis_servers import RedisServer

NS = "reviewsynccut"


async def test_a_ready_peer_answers_keyed_sync_writes_while_one_node_cannot_reach_redis(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes, _ = await start_with_n1_cut_off(cluster, private_redis)
    cut, peer = nodes[0], nodes[1]

    async def cut_not_ready() -> bool:
        status, _ = await cluster.get(cut, "/readyz")
        return status == 503

    await eventually(cut_not_ready, "n1 to say not ready", 15)
    status, ready = await cluster.get(peer, "/readyz")
    assert status == 200, ready  # n2 promises any request on any key

    async def heard_of_the_cut() -> bool:  # n1's next gossip says so (a round or two)
        for i in range(30):
            path = f"/v1/namespaces/{NS}/counters/probe{i}/increment"
            status, _ = await cluster.request("POST", peer, path, json={"delta": 1})
            if status != 200:
                return False
        return True

    await eventually(heard_of_the_cut, "n2 to hear that n1 cannot reach Redis", 10)
    refused: list[tuple[str, int, object]] = []
    for i in range(30):
        name = f"k{i}"
        path = f"/v1/namespaces/{NS}/counters/{name}/increment"
        status, body = await cluster.request(
            "POST", peer, path, json={"delta": 1}, headers={"Idempotency-Key": f"idem-{i}"}
        )
        if status != 200:
            refused.append((name, status, body))
    assert not refused, (len(refused), refused[:3])

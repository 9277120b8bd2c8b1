"""--durability sync, one node cut off from the shared Redis while its peers reach it: a peer
that says ready takes keyed increments on every key. The cut-off node says so in its gossip,
and the others pass over it as a coordinator (Cluster.coordinator) while another serving
replica can make a write durable; before, it stayed the coordinator of the shards it is
first replica of and refused them (503 on about a third of the keys), though two of three
replicas, a quorum, could write them and reach Redis.
"""

from __future__ import annotations

import redis

from tests.cluster.harness import Cluster, eventually
from tests.integration.redis_servers import RedisServer

NS = "reviewsynccut"


def _admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port or 0, socket_timeout=5)


async def test_a_ready_peer_answers_keyed_sync_writes_while_one_node_cannot_reach_redis(
    private_redis: RedisServer, cluster: Cluster
):
    with _admin(private_redis) as admin:
        admin.execute_command("ACL", "SETUSER", "cut", "on", ">pw", "~*", "&*", "+@all")
    cut_url = f"redis://cut:pw@127.0.0.1:{private_redis.port}"
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url, COUNTERS_DURABILITY="sync")
    nodes = [cluster.add(f"n{i + 1}") for i in range(3)]
    for node in nodes:
        extra = {"COUNTERS_REDIS_URL": cut_url} if node.node_id == "n1" else {}
        node.start(cluster.seeds(), **extra)
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.settled_ring(nodes, {n.node_id for n in nodes})
    cut, peer = nodes[0], nodes[1]
    with _admin(private_redis) as admin:
        admin.execute_command("ACL", "SETUSER", "cut", "off")
        admin.execute_command("CLIENT", "KILL", "USER", "cut")

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

"""An owner node that cannot reach the shared Redis while its peers can: its gossip says so
(`"durable": "down"`), and the others write its slots meanwhile (node/cluster/slot_owners.py),
so a whole-cluster kill -9 or clean stop keeps its acknowledged writes. Before, the slot rule
let a peer write another node's slots only when that node was not alive or no longer
replicated the shard: the cut-off owner's slots were written by no one for as long as the
cut lasted.
"""

from __future__ import annotations

import asyncio
import json

import redis

from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisServer

NS = "reviewcut"
TENANT = "default"
NAMES = [f"c{i}" for i in range(6)]


def _admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port or 0, socket_timeout=5)


def redis_total(server: RedisServer, name: str) -> int:
    member = json.dumps([TENANT, NS, name], separators=(",", ":"))
    with _admin(server) as client:
        keys = [k for k in client.scan_iter(match="ctr:{*}:*") if k.decode().endswith(member)]
        if not keys:
            return 0
        fields = client.hgetall(keys[0])
    return sum(int(v) * (1 if f.startswith(b"p:") else -1) for f, v in fields.items())


async def start_with_n1_cut_off(
    cluster: Cluster, private_redis: RedisServer
) -> tuple[list[Node], str]:
    """Three nodes on one Redis, n1 through a user of its own (and that user's URL); then
    that user is turned off and its connections killed: n1 alone loses Redis."""
    with _admin(private_redis) as admin:
        admin.execute_command("ACL", "SETUSER", "cut", "on", ">pw", "~*", "&*", "+@all")
    cut_url = f"redis://cut:pw@127.0.0.1:{private_redis.port}"
    nodes = [cluster.add(f"n{i + 1}") for i in range(3)]
    for node in nodes:
        extra = {"COUNTERS_REDIS_URL": cut_url} if node.node_id == "n1" else {}
        node.start(cluster.seeds(), **extra)
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.settled_ring(nodes, {n.node_id for n in nodes})
    with _admin(private_redis) as admin:
        admin.execute_command("ACL", "SETUSER", "cut", "off")
        admin.execute_command("CLIENT", "KILL", "USER", "cut")
    return nodes, cut_url


async def _restart_with_redis_back(
    cluster: Cluster, nodes: list[Node], private_redis: RedisServer, cut_url: str
) -> None:
    """n1's Redis user turned on again, every node started and ready."""
    with _admin(private_redis) as admin:
        admin.execute_command("ACL", "SETUSER", "cut", "on")
    for node in nodes:
        extra = {"COUNTERS_REDIS_URL": cut_url} if node.node_id == "n1" else {}
        node.start(cluster.seeds(), **extra)
    for node in nodes:
        await cluster.wait_ready(node)


async def _cut_off(cluster: Cluster, node: Node) -> bool:
    return not await _healthy(cluster, node)


async def _healthy(cluster: Cluster, node: Node) -> bool:
    ring = await cluster.ring(node)
    return bool(ring["persistence"]["healthy"])


async def test_acknowledged_writes_of_an_owner_cut_off_from_redis_survive_a_whole_cluster_kill(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)  # async durability
    nodes, cut_url = await start_with_n1_cut_off(cluster, private_redis)
    owner = nodes[0]
    await eventually(lambda: _cut_off(cluster, owner), "n1 to notice it cannot reach Redis", 15)

    for name in NAMES:
        status, body = await cluster.increment(owner, NS, name, 7)
        assert status == 200, (status, body)  # acknowledged (async)
    await cluster.converged(NS, {name: 7 for name in NAMES}, nodes)  # all three hold them
    # Many write-behind intervals (0.2 s) pass; n2 and n3 stay healthy throughout.
    await asyncio.sleep(3)
    assert await _healthy(cluster, nodes[1]) and await _healthy(cluster, nodes[2])
    in_redis = {name: redis_total(private_redis, name) for name in NAMES}

    for node in nodes:
        node.kill()
    await _restart_with_redis_back(cluster, nodes, private_redis, cut_url)
    values = {name: await cluster.value(nodes[1], NS, name, "all") for name in NAMES}
    assert values == {name: 7 for name in NAMES}, (
        f"after a whole-cluster kill -9: {values}; Redis held {in_redis} 3 s after the "
        "writes, while n2 and n3 could write it"
    )


async def test_a_clean_stop_of_the_whole_cluster_keeps_the_cut_off_owners_acknowledged_writes(
    private_redis: RedisServer, cluster: Cluster
):
    """Persister.close logs, for the cut-off node, "stopping with N changes not written to
    the durable replica" and says async writes are held by the other replicas; but those
    stop too (docker compose down, a rolling stop of everything), and their last flush skips
    the slots of a node they still count alive."""
    cluster.settings.update(COUNTERS_REDIS_URL=private_redis.url)
    nodes, cut_url = await start_with_n1_cut_off(cluster, private_redis)
    owner = nodes[0]
    await eventually(lambda: _cut_off(cluster, owner), "n1 to notice it cannot reach Redis", 15)
    for name in NAMES:
        status, body = await cluster.increment(owner, NS, name, 7)
        assert status == 200, (status, body)
    await cluster.converged(NS, {name: 7 for name in NAMES}, nodes)
    await asyncio.sleep(1)
    await cluster.stop()  # SIGTERM to all at once, each waited for (once: a second aborts)
    await _restart_with_redis_back(cluster, nodes, private_redis, cut_url)
    values = {name: await cluster.value(nodes[1], NS, name, "all") for name in NAMES}
    assert values == {name: 7 for name in NAMES}, f"after a clean whole-cluster stop: {values}"

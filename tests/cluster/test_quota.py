"""The per-tenant quota on live counters, on a real cluster: past it, creating a counter answers
403 on every node and changes nothing, while existing counters and other tenants go on."""

from __future__ import annotations

from node.http.auth import READ, WRITE
from tests.cluster.harness import Cluster, Node
from tests.support import bearer, eventually

SECRET = "quota-test-secret-" * 4
QUOTA = 6


def _bearer(tenant: str) -> dict[str, str]:
    return bearer(SECRET, tenant, [READ, WRITE])


async def _increment(
    cluster: Cluster, node: Node, tenant: str, name: str, delta: int = 1
) -> tuple[int, dict]:
    path = f"/v1/namespaces/web/counters/{name}/increment"
    return await cluster.request("POST", node, path, json={"delta": delta}, headers=_bearer(tenant))


async def _names(cluster: Cluster, node: Node, tenant: str) -> list[str]:
    status, body = await cluster.request(
        "GET", node, "/v1/namespaces/web/counters?limit=1000", headers=_bearer(tenant)
    )
    assert status == 200, body
    return [c["name"] for c in body["counters"]]


async def test_a_tenant_past_its_quota_cannot_create_counters_anywhere(cluster: Cluster):
    cluster.settings.update(
        COUNTERS_AUTH="jwt",
        COUNTERS_JWT_SECRET=SECRET,
        COUNTERS_COUNTER_QUOTA_OVERRIDES=f"acme={QUOTA}",
    )
    nodes = await cluster.start(3)
    for i in range(QUOTA):  # spread over the nodes, so the count must travel by gossip
        status, body = await _increment(cluster, nodes[i % 3], "acme", f"c{i}")
        assert status == 200, body

    # Counts travel by gossip: a create on a node that has not heard yet may pass (the
    # quota is soft by what a tenant creates in a gossip interval), then every node refuses.
    attempts = iter(range(1000))

    async def every_node_refuses() -> bool:
        for node in nodes:
            status, body = await _increment(cluster, node, "acme", f"extra{next(attempts)}")
            if status != 403:
                assert status == 200, body
                return False
            assert body["type"].endswith("/quota-exceeded") and body["limit"] == QUOTA, body
        return True

    await eventually(every_node_refuses, "every node to refuse acme's next counter", 10)
    created = await _names(cluster, nodes[0], "acme")
    assert QUOTA <= len(created) <= QUOTA + 3, created

    # Refused creates change nothing; existing counters and other tenants are unaffected
    for node in nodes:
        status, _ = await _increment(cluster, node, "acme", "one-more")
        assert status == 403
        status, _ = await _increment(cluster, node, "acme", "zero-more", delta=0)
        assert status == 403  # a zero increment would create the counter too
        status, body = await _increment(cluster, node, "acme", "c0")
        assert status == 200, body
    assert sorted(await _names(cluster, nodes[1], "acme")) == sorted(created)
    status, body = await _increment(cluster, nodes[2], "globex", "fresh")
    assert status == 200, body

    # In a batch, only the op that would create a counter fails
    status, body = await cluster.request(
        "POST",
        nodes[1],
        "/v1/namespaces/web/batch",
        json={"ops": [{"op": "increment", "name": "c1"}, {"op": "increment", "name": "new1"}]},
        headers=_bearer("acme"),
    )
    assert status == 200, body
    first, second = body["results"]
    assert first.get("value", 0) >= 2 and second.get("error", {}).get("status") == 403, body
    assert "new1" not in await _names(cluster, nodes[2], "acme")

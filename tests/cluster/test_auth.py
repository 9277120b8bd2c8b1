"""Tokens on a real cluster: 401 and 403 change nothing, tenants never see each other's
counters, a token narrowed to namespaces stays in them, and client tokens never reach peers."""

from __future__ import annotations

import asyncio
import time

from node.cluster.links import PEER_PATH
from node.http.auth import ADMIN, READ, WRITE
from tests.cluster.harness import Cluster, Node
from tests.support import bearer

SECRET = "cluster-test-secret-" * 4


def _bearer(tenant: str, *scopes: str, namespaces: list[str] | None = None) -> dict[str, str]:
    return bearer(SECRET, tenant, scopes, namespaces=namespaces)


async def _start(cluster: Cluster) -> list[Node]:
    cluster.settings.update(COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET)
    return await cluster.start(3)


async def _increment(cluster: Cluster, node: Node, ns: str, name: str, headers: dict[str, str]):
    path = f"/v1/namespaces/{ns}/counters/{name}/increment"
    return await cluster.request("POST", node, path, json={"delta": 2}, headers=headers)


async def _value(cluster: Cluster, node: Node, ns: str, name: str, headers: dict[str, str]):
    status, body = await cluster.request(
        "GET", node, f"/v1/namespaces/{ns}/counters/{name}?consistency=all", headers=headers
    )
    assert status == 200, body
    return body["value"]


async def test_tokens_scopes_tenants_and_namespaces_on_a_live_cluster(cluster: Cluster):
    nodes = await _start(cluster)
    acme_rw = _bearer("acme", READ, WRITE)
    globex_rw = _bearer("globex", READ, WRITE)
    status, body = await _increment(cluster, nodes[0], "web", "views", acme_rw)
    assert status == 200 and body["value"] == 2, (status, body)

    # 401: no token, a bad one; 403: a read-only token writing, a narrowed one elsewhere
    for headers, expected in (
        ({"X-No-Token": "1"}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        (_bearer("acme", READ), 403),
        (_bearer("acme", READ, WRITE, namespaces=["mobile"]), 403),
    ):
        status, body = await _increment(cluster, nodes[1], "web", "views", headers)
        assert status == expected and body["type"].endswith(
            "/unauthorized" if expected == 401 else "/forbidden"
        ), body
    assert await _value(cluster, nodes[2], "web", "views", acme_rw) == 2  # nothing changed

    # Same names, other tenant: a separate counter
    assert await _value(cluster, nodes[1], "web", "views", globex_rw) == 0
    status, _ = await _increment(cluster, nodes[2], "web", "views", globex_rw)
    assert status == 200
    assert await _value(cluster, nodes[0], "web", "views", acme_rw) == 2
    assert await _value(cluster, nodes[0], "web", "views", globex_rw) == 2
    status, listing = await cluster.request(
        "GET", nodes[1], "/v1/namespaces/web/counters", headers=_bearer("initech", READ)
    )
    assert status == 200 and listing["counters"] == [], (status, listing)

    # Admin needs the admin scope; a narrowed token reads its own namespace only
    status, _ = await cluster.request("GET", nodes[0], "/admin/ring", headers=acme_rw)
    assert status == 403
    status, _ = await cluster.request("GET", nodes[0], "/admin/ring", headers=_bearer("x", ADMIN))
    assert status == 200
    narrowed = _bearer("acme", READ, namespaces=["web"])
    assert await _value(cluster, nodes[1], "web", "views", narrowed) == 2


async def test_a_client_token_never_reaches_the_peer_endpoint(cluster: Cluster):
    nodes = await _start(cluster)
    status, body = await cluster.request(
        "GET", nodes[0], PEER_PATH, headers=_bearer("acme", READ, WRITE, ADMIN)
    )
    assert status == 401, body


async def test_a_flooding_tenant_is_limited_while_another_keeps_going(cluster: Cluster):
    cluster.settings.update(COUNTERS_RATE_LIMIT_PER_S="20", COUNTERS_RATE_LIMIT_BURST="20")
    nodes = await _start(cluster)
    noisy, calm = _bearer("noisy", READ, WRITE), _bearer("calm", READ, WRITE)
    statuses: list[int] = []
    started = time.monotonic()
    for _ in range(10):  # bursts of 40 at once, far above 20/s however slow the machine
        replies = await asyncio.gather(
            *(_increment(cluster, nodes[0], "web", "hits", noisy) for _ in range(40))
        )
        for status, body in replies:
            statuses.append(status)
            assert status in (200, 429), (status, body)
            if status == 429:
                assert body["type"].endswith("/rate-limited"), body
        if 429 in statuses:
            break
    elapsed = time.monotonic() - started
    accepted = statuses.count(200)
    assert 429 in statuses, f"{len(statuses)} increments in {elapsed:.1f}s, none limited"
    # the full bucket (20), and no more than the rate (20/s) refilled while the bursts ran
    assert 20 <= accepted <= 20 + 20 * elapsed + 1, (accepted, elapsed)
    for _ in range(5):  # the other tenant is not starved on the same node
        status, body = await _increment(cluster, nodes[0], "web", "hits", calm)
        assert status == 200, body
    # what was refused changed nothing: the value counts exactly the accepted increments
    assert await _value(cluster, nodes[1], "web", "hits", noisy) == 2 * statuses.count(200)

"""Listing a namespace (node/coordination/listing.py, node/http/counters.py): what a client
may expect from GET /v1/namespaces/{ns}/counters at each consistency, and of its cursors and
prefixes. Before: a listing read one replica per shard whatever it was asked, a node with a
stale ring answered short pages as 200, and garbled cursors and the prefix '.' were
mishandled.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.base.errors import QuorumUnavailable
from node.cluster import wire
from node.coordination import listing
from node.coordination.ops import Op, OpKind
from node.http import counters as counters_api
from node.http import middleware
from node.http.appkeys import CLUSTER, CONFIG, COORDINATOR, RATE_LIMITER
from node.http.auth import ANONYMOUS_TENANT
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from tests.inprocess.cluster import InProcessCluster, Node, eventually

T = ANONYMOUS_TENANT  # --auth none: every request is the anonymous tenant's


@asynccontextmanager
async def _http(node: Node) -> AsyncIterator[TestClient]:
    """The client HTTP routes of counters.py in front of an in-process node."""
    app = web.Application(middlewares=[middleware.edge(Metrics(), None)])
    app[CONFIG] = node.parts.config
    app[RATE_LIMITER] = RateLimiter(node.parts.config)
    app[CLUSTER] = node.cluster
    app[COORDINATOR] = node.coordinator
    app.add_routes(counters_api.routes)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _get_json(client: TestClient, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    return response.status, await response.json(content_type=None)


async def test_a_listing_shows_a_counter_acknowledged_at_quorum(inproc: InProcessCluster):
    """A counter whose creation was acknowledged at quorum (W=2 of N=3) is listed by every
    node, as a GET at the default consistency (quorum) from the same node sees it."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True, tenant=T)
    a, b, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    await inproc.pause_gossip()  # no anti-entropy during the test
    inproc.network.partition([a.address], [b.address], one_way=True)  # b misses a's writes
    [written] = await a.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "quorum")
    assert written.value == 5 and written.problem is None  # acknowledged
    assert b.value(key) is None  # b, a ready replica, missed it

    # the listing, asked of b at quorum (its default), as the GET below
    rows = await listing.scan(b.coordinator, T, key[1], "", "", 100, "quorum")
    async with _http(b) as client:
        status, body = await _get_json(client, f"/v1/namespaces/{key[1]}/counters")
        one = await listing.scan(b.coordinator, T, key[1], "", "", 100, "one")
        refused, _ = await _get_json(client, f"/v1/namespaces/{key[1]}/counters?consistency=all")
    # what a GET of the counter from b answers at the default consistency
    [read] = await b.coordinator.run([Op(OpKind.GET, key)], "quorum")
    inproc.network.heal()
    assert read.value == 5
    assert status == 200, body
    assert (key[2], 5) in rows, f"listing from {b.node_id} misses an acknowledged counter: {rows}"
    assert {"name": key[2], "value": 5} in body["counters"], body
    assert (key[2], 5) not in one  # at one, b's own store: as documented
    assert refused == 503  # at all, a cannot answer b (the partition): refused, not short


async def test_a_listing_refuses_an_unknown_consistency(inproc: InProcessCluster):
    """Every other read answers 400 invalid-consistency for ?consistency=bogus; a listing
    silently ignores the parameter (so ?consistency=all promises nothing either)."""
    [node] = await inproc.start(1, replicas=1, write_quorum=1, read_quorum=1)
    async with _http(node) as client:
        status, body = await _get_json(client, "/v1/namespaces/ns/counters/c?consistency=bogus")
        assert status == 400, body
        status, body = await _get_json(client, "/v1/namespaces/ns/counters?consistency=bogus")
        assert status == 400, body


async def test_a_prefix_lists_names_that_begin_with_a_dot(inproc: InProcessCluster):
    """'.a' is a valid counter name (validation.NAME_REGEX allows a leading dot), yet the
    prefix '.' that selects it answers 400."""
    [node] = await inproc.start(1, replicas=1, write_quorum=1, read_quorum=1)
    async with _http(node) as client:
        response = await client.post("/v1/namespaces/ns/counters/.a/increment", json={"delta": 3})
        assert response.status == 200, await response.text()
        status, body = await _get_json(client, "/v1/namespaces/ns/counters")
        assert body["counters"] == [{"name": ".a", "value": 3}], body
        status, body = await _get_json(client, "/v1/namespaces/ns/counters?prefix=.")
        assert status == 200, body
        assert body["counters"] == [{"name": ".a", "value": 3}], body


async def test_cursors_and_limits(inproc: InProcessCluster):
    """Pages through every name once; garbled cursors and bad limits answer 400, never 500."""
    await inproc.start(3)
    names = [f"x{i:02d}" for i in range(30)] + ["x", "x-", "x.", "x:", "x_", "X", "-x", "0"]
    n1 = inproc.nodes["n1"]
    for name in names:
        [res] = await n1.coordinator.run([Op(OpKind.INCREMENT, (T, "ns", name), 1)], "all")
        assert res.problem is None, res
    async with _http(inproc.nodes["n2"]) as client:
        for limit in (1, 3, 7, 38, 1000):
            seen: list[str] = []
            cursor = None
            for _ in range(50):
                path = f"/v1/namespaces/ns/counters?limit={limit}"
                if cursor:
                    path += f"&cursor={cursor}"
                status, body = await _get_json(client, path)
                assert status == 200, body
                seen += [row["name"] for row in body["counters"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            assert seen == sorted(names), (limit, seen)
        cursors = [
            "",
            "%%%",
            "YQ",
            "=",
            "====",
            base64.urlsafe_b64encode(b"a" * 201).decode(),
            base64.urlsafe_b64encode(b"a..b").decode(),
            base64.urlsafe_b64encode(b"\x00").decode(),
            base64.urlsafe_b64encode("é".encode()).decode(),
            "%C3%A9",
            "YQ==YQ==",
            "Y%00Q==",
        ]
        for cursor in cursors:
            response = await client.get(f"/v1/namespaces/ns/counters?cursor={cursor}")
            assert response.status in (200, 400), (cursor, response.status, await response.text())
        for limit in ("0", "1001", "-1", "1e3", "", " 5", "5 ", "\uff11", "99999999999999999999"):
            response = await client.get("/v1/namespaces/ns/counters", params={"limit": limit})
            assert response.status == 400, (limit, response.status)
        for prefix in ("a/b", "é", "a..", "x" * 201):
            response = await client.get("/v1/namespaces/ns/counters", params={"prefix": prefix})
            assert response.status == 400, (prefix, response.status)


async def test_a_listing_from_a_node_with_a_stale_ring_misses_shards_handed_over(
    inproc: InProcessCluster,
):
    """n5 joins n1..n4; the nodes that give it shards hand them over and forget them. n3 has
    not heard of the new ring yet (gossip into it is lost: a slow gossip round, a busy node).
    A listing from n3 asks the former replica to scan shards it no longer holds, and it
    answers 200 from a store without them (a forwarded GET, by contrast, is forwarded on by
    a node whose view is newer: Coordinator.run with hops)."""
    n1, _, n3, _ = await inproc.start(4, failure_timeout_s=30.0)
    names = [f"c{i:03d}" for i in range(120)]
    ops = [Op(OpKind.INCREMENT, (T, "ns", name), 1) for name in names]
    results = await n1.coordinator.run(ops, "all")
    assert all(r.problem is None for r in results), results[:3]
    inproc.network.drop(1.0, dst=n3.address, kinds=[wire.GOSSIP])  # n3 hears no ring change
    joiner = await inproc.launch("n5", seeds=())
    await eventually(lambda: joiner.cluster.ready, "n5 up on its own")
    await inproc.admit(n1, joiner)
    await eventually(
        lambda: "n5" in n1.cluster.state.current.nodes and n1.cluster.state.pending is None,
        "n5 in the ring, in n1's view",
        timeout=15.0,
        show=inproc.describe,
    )
    assert "n5" not in n3.cluster.state.current.nodes  # n3's ring is stale

    def lost() -> dict[str, list[str]]:
        """name -> the stale owner n3 would ask, for names that owner no longer holds."""
        out: dict[str, list[str]] = {}
        for name in names:
            key = (T, "ns", name)
            shard = n3.cluster.shard_of(key)
            owner = n3.coordinator.owner(shard)
            if owner != "n3" and owner not in n1.cluster.replicas(shard):
                out.setdefault(str(owner), []).append(name)
        return out

    moved = lost()
    assert moved, "no shard left a node n3 would ask"
    await eventually(
        lambda: all(
            inproc.nodes[owner].value((T, "ns", name)) is None
            for owner, gone in moved.items()
            for name in gone
        ),
        "the former replicas forgot the shards they gave n5",
        timeout=15.0,
        show=inproc.describe,
    )
    # a short page would be a lie: refused (503, retry) while n3's ring is stale...
    with pytest.raises(QuorumUnavailable):
        await listing.scan(n3.coordinator, T, "ns", "", "", 1000, "one")
    inproc.network.heal()

    async def complete() -> bool:  # ...and whole once it has heard
        try:
            rows = await listing.scan(n3.coordinator, T, "ns", "", "", 1000, "one")
        except QuorumUnavailable:
            return False
        assert [name for name, _ in rows] == names
        return True

    for _ in range(200):
        if await complete():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("n3's listing never whole after it heard the ring")


async def test_a_garbled_cursor_answers_400(inproc: InProcessCluster):
    """A cursor is urlsafe base64 of a name; one with junk around or inside a valid one is not
    one the API returned, yet base64's non-strict decoding drops the junk and pages on."""
    [node] = await inproc.start(1, replicas=1, write_quorum=1, read_quorum=1)
    for name in ("a", "b"):
        [res] = await node.coordinator.run([Op(OpKind.INCREMENT, (T, "ns", name), 1)], "all")
        assert res.problem is None
    async with _http(node) as client:
        accepted = []
        for cursor in ("YQ==YQ==", "Y.Q==", "Y Q==", "YQ===", "Y\tQ==", "Y+Q=="):
            response = await client.get("/v1/namespaces/ns/counters", params={"cursor": cursor})
            if response.status != 400:
                accepted.append((cursor, response.status, (await response.json())["counters"]))
        assert not accepted, accepted

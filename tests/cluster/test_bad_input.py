"""Bad requests to a live cluster answer 4xx problem+json and change nothing."""

from __future__ import annotations

from typing import Any

from tests.cluster.harness import Cluster

NS = "badinput"
GOOD = f"/v1/namespaces/{NS}/counters/good"

# (method, path, raw body, expected status, expected problem type suffix)
CASES: list[tuple[str, str, Any, int, str]] = [
    ("POST", f"{GOOD}/increment", b'{"delta": 1.5}', 400, "invalid-delta"),
    ("POST", f"{GOOD}/increment", b'{"delta": "3"}', 400, "invalid-delta"),
    ("POST", f"{GOOD}/increment", b'{"delta": true}', 400, "invalid-delta"),
    ("POST", f"{GOOD}/increment", b'{"delta": null}', 400, "invalid-delta"),
    ("POST", f"{GOOD}/increment", b'{"delta": 9223372036854775808}', 400, "invalid-delta"),
    ("POST", f"{GOOD}/increment", b'{"delta": 1, "extra": 2}', 400, "invalid-body"),
    ("POST", f"{GOOD}/increment", b"[1]", 400, "invalid-body"),
    ("POST", f"{GOOD}/increment", b"{not json", 400, "invalid-body"),
    ("POST", f"{GOOD}/increment", b"[" * 100_000 + b"]" * 100_000, 400, "invalid-body"),
    ("POST", f"{GOOD}/increment?consistency=most", b'{"delta": 1}', 400, "invalid-consistency"),
    ("GET", f"{GOOD}?consistency=ONE", None, 400, "invalid-consistency"),
    ("POST", f"/v1/namespaces/{NS}/counters/a..b/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/counters/a%20b/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/counters/a%2Fb/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/counters/a%00b/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/counters/caf%C3%A9/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/counters/{'x' * 201}/increment", b"{}", 400, "invalid-name"),
    ("POST", "/v1/namespaces/b%20d/counters/good/increment", b"{}", 400, "invalid-name"),
    ("POST", f"/v1/namespaces/{NS}/batch", b"{}", 400, "invalid-body"),
    ("POST", f"/v1/namespaces/{NS}/batch", b'{"ops": []}', 400, "invalid-body"),
    (
        "POST",
        f"/v1/namespaces/{NS}/batch",
        b'{"ops": [{"op": "increment", "name": "good", "delta": 2},'
        b' {"op": "increment", "name": "bad name", "delta": 2}]}',
        400,
        "invalid-name",
    ),
    (
        "POST",
        f"/v1/namespaces/{NS}/batch",
        b'{"ops": [{"op": "increment", "name": "good"}, {"op": "explode", "name": "good"}]}',
        400,
        "invalid-body",
    ),
    (
        "POST",
        f"/v1/namespaces/{NS}/batch",
        b'{"ops": [' + b",".join([b'{"op": "get", "name": "good"}'] * 1001) + b"]}",
        400,
        "invalid-body",
    ),
    ("GET", f"/v1/namespaces/{NS}/counters?limit=0", None, 400, "invalid-body"),
    ("GET", f"/v1/namespaces/{NS}/counters?cursor=%%%", None, 400, "invalid-body"),
    ("POST", f"{GOOD}/increment", b"x" * (1024 * 1024 + 1), 413, "too-large"),
    ("DELETE", "/admin/nodes/nobody", None, 404, "not-found"),
    ("DELETE", "/admin/nodes/n1?force=maybe", None, 400, "invalid-body"),
    ("POST", "/admin/nodes", b'{"address": "nowhere"}', 400, "invalid-body"),
    # not a host: before, each answered 503 "cannot reach" (x/y:80 dialled x:80)
    *(
        ("POST", "/admin/nodes", b'{"address": "%s"}' % bad, 400, "invalid-body")
        for bad in (b"a b:80", b"http://x:80", b"@:80", b"x/y:80", b"x?y:80")
    ),
    ("GET", "/peer/ws", None, 401, "bad-request"),
]


async def test_bad_requests_answer_4xx_and_change_nothing(cluster: Cluster):
    nodes = await cluster.start(3)
    status, _ = await cluster.increment(nodes[0], NS, "good", 10)
    assert status == 200
    ring_before = (await cluster.settled_ring(nodes))["checksum"]
    for index, (method, path, body, expected_status, problem) in enumerate(CASES):
        node = nodes[index % 3]
        status, reply = await cluster.request(method, node, path, data=body)
        assert status == expected_status, (method, path[:80], status, reply)
        assert isinstance(reply, dict) and reply["type"].endswith("/" + problem), (path, reply)
    for node in nodes:
        assert await cluster.value(node, NS, "good", "all") == 10
    status, listing = await cluster.get(nodes[1], f"/v1/namespaces/{NS}/counters")
    assert status == 200 and [c["name"] for c in listing["counters"]] == ["good"], listing
    assert (await cluster.ring(nodes[2]))["checksum"] == ring_before


async def test_overflow_answers_422_and_keeps_the_value(cluster: Cluster):
    nodes = await cluster.start(3)
    top = 2**63 - 1
    status, body = await cluster.increment(nodes[0], NS, "big", top)
    assert status == 200 and body["value"] == top, (status, body)
    status, body = await cluster.increment(nodes[1], NS, "big", 1)
    assert status == 422 and body["type"].endswith("/overflow"), body
    status, body = await cluster.increment(nodes[2], NS, "low", -(2**63))
    assert status == 200
    status, body = await cluster.increment(nodes[2], NS, "low", -1)
    assert status == 422, body
    for node in nodes:
        assert await cluster.value(node, NS, "big", "all") == top
        assert await cluster.value(node, NS, "low", "all") == -(2**63)


async def test_oversized_headers_answer_431_and_change_nothing(cluster: Cluster):
    [node] = await cluster.start(1)
    status, _ = await cluster.increment(node, NS, "good", 10)
    assert status == 200
    path = f"{GOOD}/increment"
    for headers in (
        {"X-Big": "x" * 20_000},  # one large header
        {f"X-Many-{i}": "y" * 400 for i in range(50)},  # many headers adding up
    ):
        async with cluster.session.post(node.url + path, json={"delta": 1}, headers=headers) as r:
            body = await r.json(content_type=None)
            assert r.status == 431 and body["type"].endswith("/headers-too-large"), body
    # A header line past the HTTP parser's own bound is refused by the parser itself
    huge = {"X-Huge": "z" * 100_000}
    async with cluster.session.post(node.url + path, json={"delta": 1}, headers=huge) as r:
        assert r.status == 400
    assert await cluster.value(node, NS, "good", "all") == 10

"""Limits on a live node: oversized and deeply nested bodies answer fast without growing
the node's memory, the largest batch applies and one op more is refused, and the last
member cannot remove itself."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Node
from tests.cluster.hostile import (
    Client,
    assert_problem,
    encode,
    start_node,
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory)


def rss_bytes(node: Node) -> int:
    assert node.process is not None
    status = Path(f"/proc/{node.process.pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def test_oversized_and_deep_bodies_answer_fast_without_growing_memory(node: Node):
    client = Client(node, "limits")
    path = "/v1/namespaces/limits/counters/c/increment"
    oversized = b"[" * (8 * 1024 * 1024)
    cases = [
        (oversized, 413, "too-large"),
        (b" " * (1024 * 1024) + b"{}", 413, "too-large"),  # whitespace counts too
        (b"[" * (1024 * 1024 - 1), 400, "invalid-body"),  # nesting: refused, not recursed
        (b'{"delta": ' + b"7" * (1024 * 1024 - 20) + b"}", 400, "invalid-body"),  # huge int
        (b'{"delta": 1' + b"0" * 400 + b"}", 400, "invalid-delta"),
    ]
    client.call("POST", path, b"{}")  # warm up before measuring
    rss_before = rss_bytes(node)
    for _ in range(3):
        for raw, status, problem in cases:
            started = time.monotonic()
            reply = client.call("POST", path, raw)
            assert_problem(reply, status, problem)
            assert time.monotonic() - started < 2.0, (raw[:20], status)
    assert client.value("limits", "c") == 1
    grown = rss_bytes(node) - rss_before
    assert grown < 64 * 1024 * 1024, f"node grew by {grown / 2**20:.0f} MiB on refused bodies"


def test_the_largest_batch_applies_and_one_more_op_is_refused(node: Node):
    client = Client(node, "limits")
    ops = [{"op": "increment", "name": f"n{i % 10}"} for i in range(1000)]
    reply = client.call("POST", "/v1/namespaces/big/batch", encode({"ops": ops}))
    assert reply.status == 200 and len(reply.body["results"]) == 1000, reply.status
    reply = client.call("POST", "/v1/namespaces/big/batch", encode({"ops": [*ops, ops[0]]}))
    assert_problem(reply, 400, "invalid-body")
    assert [client.value("big", f"n{i}") for i in range(10)] == [100] * 10


def test_the_last_member_can_neither_leave_nor_be_removed(node: Node):
    client = Client(node, "admin")
    for query in ("", "?force=true"):
        assert_problem(client.call("DELETE", f"/admin/nodes/n1{query}"), 409, "conflict")
    reply = client.call("GET", "/admin/nodes")
    assert [(m["node_id"], m["status"]) for m in reply.body["nodes"]] == [("n1", "up")]
    assert client.call("POST", "/v1/namespaces/still/counters/up/increment").status == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_body_that_does_not_decompress_is_a_client_error_and_changes_nothing(
    node: Node, encoding: str
):
    client = Client(node, "limits")
    path = f"/v1/namespaces/limits/counters/{encoding}/increment"
    assert client.call("POST", path, b'{"delta": 1}').status == 200
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        headers = {**client.headers, "Content-Encoding": encoding}
        connection.request("POST", path, body=b'{"delta": 1}', headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    assert response.status == 400, raw
    if response.getheader("Content-Type") == "application/problem+json":  # aiohttp's own
        assert json.loads(raw)["type"].endswith("/invalid-body"), raw  # parser refuses a
    assert client.value("limits", encoding) == 1  # deflate body before any handler runs


def test_an_authorization_header_that_is_not_text_is_refused_as_unauthorized(node: Node):
    for raw in (b"Bearer \xff\xfe.a.b", b"Bearer \xc3\xa9t\xc3\xa9.a.b"):
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        try:
            connection.putrequest("GET", "/v1/namespaces/limits/counters/c")
            connection.putheader("Authorization", raw)
            connection.endheaders()
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        assert (response.status, body["type"].rsplit("/", 1)[-1]) == (401, "unauthorized"), body


def test_a_parameter_or_header_given_twice_is_refused_and_changes_nothing(node: Node):
    """Which of two values would count is a guess: refused, 400, nothing applied."""
    client = Client(node, "limits")
    path = "/v1/namespaces/limits/counters/twice/increment"
    assert client.call("POST", path, b'{"delta": 1}').status == 200
    reply = client.call("POST", path + "?consistency=one&consistency=all", b'{"delta": 1}')
    assert_problem(reply, 400, "bad-request")
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        for name, value in [*client.headers.items(), ("Content-Type", "application/json")]:
            connection.putheader(name, value)
        connection.putheader("Idempotency-Key", "first")
        connection.putheader("Idempotency-Key", "second")
        connection.putheader("Content-Length", "12")
        connection.endheaders(b'{"delta": 1}')
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert (response.status, body["type"]) == (400, "/problems/bad-request"), body
    assert client.value("limits", "twice") == 1

"""One tenant cannot take every event stream of a node: past its share (a quarter of
--events-max-streams by default with tokens) it is answered 429, while other tenants still
open theirs. Nor can it push another tenant's events out of a node's log, nor read its
write volume in the event ids."""

from __future__ import annotations

import asyncio
import socket

from node.http.auth import READ, WRITE
from tests.cluster.harness import Cluster, Node
from tests.cluster.test_feed import SSE
from tests.support import bearer, eventually

SECRET = "feed-tenants-secret-" * 4
NS = "feed"


def _open(node: Node, tenant: str) -> tuple[socket.socket, bytes]:
    """A raw SSE request as `tenant`: the socket (held open) and its status line."""
    auth = bearer(SECRET, tenant, [READ])["Authorization"]
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    request = f"GET /v1/namespaces/{NS}/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    sock.sendall(request.encode())
    return sock, sock.recv(4096).split(b"\r\n", 1)[0]


async def test_one_tenant_cannot_hold_every_stream_of_a_node(cluster: Cluster):
    cluster.settings.update(
        COUNTERS_AUTH="jwt",
        COUNTERS_JWT_SECRET=SECRET,
        COUNTERS_EVENTS_MAX_STREAMS="8",
        COUNTERS_EVENTS_HEARTBEAT_S="0.2",  # a closed stream is noticed at its next beat
    )
    (node,) = await cluster.start(1)
    held: list[socket.socket] = []
    try:
        for _ in range(2):  # a quarter of 8
            sock, status = await asyncio.to_thread(_open, node, "acme")
            held.append(sock)
            assert status.startswith(b"HTTP/1.1 200"), status
        path = f"/v1/namespaces/{NS}/events"
        status, body = await cluster.request(
            "GET", node, path, headers=bearer(SECRET, "acme", [READ])
        )
        assert status == 429 and body["type"].endswith("/tenant-streams"), body
        sock, other = await asyncio.to_thread(_open, node, "globex")  # others still get theirs
        held.append(sock)
        assert other.startswith(b"HTTP/1.1 200"), other
    finally:
        for sock in held:
            sock.close()

    async def reopened() -> bool:  # a stream closed gives its place back
        sock, again = await asyncio.to_thread(_open, node, "acme")
        sock.close()
        return again.startswith(b"HTTP/1.1 200")

    assert await eventually(reopened, "acme's closed streams noticed", 10)


async def test_a_busy_tenant_neither_evicts_nor_reveals_through_another_tenants_feed(
    cluster: Cluster,
):
    cluster.settings.update(
        COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET, COUNTERS_EVENTS_LOG_MAX="200"
    )
    (node,) = await cluster.start(1)
    assert cluster.session is not None
    quiet, busy = (bearer(SECRET, t, [READ, WRITE]) for t in ("quiet", "busy"))
    url = f"{node.url}/v1/namespaces/{NS}/events"

    async def write(headers: dict[str, str], names: list[str]) -> None:
        ops = [{"op": "increment", "name": name} for name in names]
        path = f"/v1/namespaces/{NS}/batch"
        status, body = await cluster.request("POST", node, path, json={"ops": ops}, headers=headers)
        assert status == 200, body

    async with SSE(cluster.session, url, quiet) as stream:
        await write(quiet, [f"q{i}" for i in range(5)])
        await stream.until(lambda: len(stream.events) >= 5, "quiet's five events")
    last_id = stream.events[-1]["id"]
    for round_ in range(3):  # 3,000 events of another tenant, in a log that holds 200
        await write(busy, [f"b{round_}-{i}" for i in range(1000)])
    await write(quiet, ["q-after"])
    async with SSE(cluster.session, url, {**quiet, "Last-Event-ID": last_id}) as resumed:
        await resumed.until(lambda: resumed.changes("q-after"), "quiet's next event")
    # no gap: quiet's events were not pushed out by busy's; and its next event is the
    # next number of its own sequence, whatever busy wrote meanwhile
    assert [e["event"] for e in resumed.events] == ["change"], resumed.events
    node_id, seq = last_id.split(":")
    assert resumed.events[0]["id"] == f"{node_id}:{int(seq) + 1}", (last_id, resumed.events)

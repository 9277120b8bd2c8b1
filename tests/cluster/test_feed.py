"""The change feed on three real nodes, read as its users read it: SSE with an aiohttp client
(and a raw socket for a client that stops reading), the Redis stream with a redis-py
consumer group. Every change of a counter arrives in order and the changes add up to its
total, across a disconnect and a kill -9 of the publishing node; tenants see only their
own; bad input is a 400; a slow consumer is cut off with a final event."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from typing import Any

import aiohttp
import redis.asyncio as redis

from node.http.auth import READ, WRITE
from ring.hashing import key_hash
from tests.cluster.harness import Cluster, Node
from tests.cluster.write_stream import WriteStream
from tests.integration.redis_servers import RedisServer
from tests.support import bearer, eventually

SECRET = "feed-test-secret-" * 4
NS = "feed"


def token(tenant: str, *scopes: str) -> dict[str, str]:
    return bearer(SECRET, tenant, scopes or (READ, WRITE))


class SSE:
    """A real HTTP client reading a stream: its events as dicts (id, event, data), in order."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]):
        self.session, self.url, self.headers = session, url, headers
        self.events: list[dict[str, Any]] = []
        self.comments = 0
        self.task: asyncio.Task[None] | None = None
        self.opened = asyncio.Event()

    async def __aenter__(self) -> SSE:
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _read(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with self.session.get(self.url, headers=self.headers, timeout=timeout) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream", resp.status
            self.opened.set()
            event: dict[str, Any] = {}
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "event" in event:
                        self.events.append(event)
                    event = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    field, _, value = line.partition(": ")
                    event[field] = json.loads(value) if field == "data" else value

    def changes(self, name: str) -> list[dict[str, Any]]:
        return [
            e["data"] for e in self.events if e["event"] == "change" and e["data"]["name"] == name
        ]

    async def until(self, check: Any, what: str, timeout: float = 15) -> None:
        await eventually(check, what, timeout, every=0.05, show=lambda: self.events[-5:])


async def metric(cluster: Cluster, node: Node, name: str, containing: str = "") -> float:
    assert cluster.session is not None
    async with cluster.session.get(node.url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and containing in line
    )


async def bad_requests(cluster: Cluster, node: Node) -> None:
    path = f"/v1/namespaces/{NS}/events"
    for query, headers, status, kind in (
        ("?prefix=a%20b", token("acme"), 400, "invalid-name"),
        ("?prefix=..", token("acme"), 400, "invalid-name"),
        ("", {**token("acme"), "Last-Event-ID": "n1:12,junk"}, 400, "invalid-event-id"),
        ("", {**token("acme"), "Last-Event-ID": "n1:-3"}, 400, "invalid-event-id"),
        ("", {"X-No-Token": "1"}, 401, "unauthorized"),
        ("", token("acme", WRITE), 403, "forbidden"),
        ("", bearer(SECRET, "acme", (READ,), namespaces=["other"]), 403, "forbidden"),
    ):
        got, body = await cluster.request("GET", node, path + query, headers=headers)
        assert got == status and body["type"].endswith("/" + kind), (query, got, body)
    assert await metric(cluster, node, "counters_events_streams ") == 0


async def write_in_order(cluster: Cluster, nodes: list[Node], tenant: str, name: str, n: int):
    """n acknowledged increments of 1..n, through every node in turn; returns the totals."""
    totals, total = [], 0
    for i in range(n):
        path = f"/v1/namespaces/{NS}/counters/{name}/increment"
        status, body = await cluster.request(
            "POST", nodes[i % len(nodes)], path, json={"delta": i + 1}, headers=token(tenant)
        )
        assert status == 200, body
        total += i + 1
        totals.append(total)
        await asyncio.sleep(0.03)  # spread over several coalescing intervals
    return totals


async def coordinator_of(cluster: Cluster, node: Node, tenant: str, name: str) -> str:
    """The first of the counter's replicas: the node that publishes its changes."""
    ring = await cluster.ring(node)
    shard = key_hash(tenant, NS, name) & (ring["shards"] - 1)
    return str(ring["preference_lists"][shard][0])


async def test_the_feed_over_sse_and_redis_streams(cluster: Cluster, redis_server: RedisServer):
    cluster.settings.update(
        COUNTERS_AUTH="jwt",
        COUNTERS_JWT_SECRET=SECRET,
        COUNTERS_EVENTS_REDIS_URL=redis_server.url,
        COUNTERS_EVENTS_STALL_S="1",
        COUNTERS_EVENTS_HEARTBEAT_S="0.3",
    )
    nodes = await cluster.start(3)
    session = cluster.session
    assert session is not None
    await bad_requests(cluster, nodes[0])
    stream = redis.Redis.from_url(redis_server.url)
    await stream.xgroup_create(f"counters:events:acme/{NS}", "readers", id="0", mkstream=True)

    publisher = cluster.nodes[await coordinator_of(cluster, nodes[0], "acme", "video:1")]
    reader = next(n for n in nodes if n is not publisher)  # so that the publisher can die
    url = f"{reader.url}/v1/namespaces/{NS}/events?prefix=video:"
    async with (
        SSE(session, url, token("acme", READ)) as acme,
        SSE(session, f"{nodes[2].url}/v1/namespaces/{NS}/events", token("globex", READ)) as globex,
    ):
        totals = await write_in_order(cluster, nodes, "acme", "video:1", 12)
        await write_in_order(cluster, nodes, "acme", "photo:1", 2)  # outside the prefix
        await write_in_order(cluster, nodes, "globex", "video:1", 1)
        await acme.until(
            lambda: (
                acme.changes("video:1")[-1:] and acme.changes("video:1")[-1]["value"] == totals[-1]
            ),
            "acme sees video:1's total",
        )
        await globex.until(lambda: globex.changes("video:1"), "globex sees its own")
        seen = acme.changes("video:1")
        # every change in order: each value a total some acknowledged write made, rising,
        # and the changes add up (coalescing merges neighbours, never drops or reorders).
        # At least once: a node that takes the shard over (one stalled past the failure
        # timeout on a busy machine) republishes the latest value, which a stream then sends
        # again as a change of 0 with the same version (README, "Real time").
        values = [e["value"] for e in seen]
        assert values == sorted(values), seen
        repeats = [(a, b) for a, b in itertools.pairwise(seen) if a["value"] == b["value"]]
        assert all(b["change"] == 0 and b["version"] == a["version"] for a, b in repeats), seen
        assert {e["value"] for e in seen} <= set(totals)
        assert sum(e["change"] for e in seen) == totals[-1]
        assert all(e["name"] == "video:1" for e in acme.changes("video:1"))
        assert not acme.changes("photo:1")
        assert [e["value"] for e in globex.changes("video:1")] == [1]  # not acme's
        await acme.until(lambda: acme.comments >= 1, "a heartbeat while idle")
        last_id = acme.events[-1]["id"]

    # resume after a disconnect: the changes made meanwhile, none missed, none repeated
    more = await write_in_order(cluster, nodes, "acme", "video:1", 5)
    final = totals[-1] + more[-1]
    resumed_headers = {**token("acme", READ), "Last-Event-ID": last_id}
    async with SSE(session, url, resumed_headers) as resumed:
        await resumed.until(
            lambda: (
                resumed.changes("video:1")[-1:] and resumed.changes("video:1")[-1]["value"] == final
            ),
            "resumed stream reaches the total",
        )
        assert sum(e["change"] for e in seen + resumed.changes("video:1")) == final
        assert all(e["event"] != "gap" for e in resumed.events)

        # the Redis stream, read by a consumer group, holds the same coalesced changes, at
        # least once: read as the README tells a consumer (an entry whose version is not
        # above the last taken is dropped; a replayed one, republished by a node that took
        # the shard over when one stalled, counts from the last value taken)
        async def group_total() -> int | None:
            got = await stream.xreadgroup("readers", "c1", {f"counters:events:acme/{NS}": ">"})
            entries = [f for _, batch in got for _, f in batch] if got else []
            for entry in entries:
                version = int(entry[b"version"])
                if entry[b"name"] != b"video:1" or (taken and version <= taken[-1][0]):
                    continue
                value, change = int(entry[b"value"]), int(entry[b"change"])
                if b"replayed" in entry and taken:
                    change = value - taken[-1][1]
                taken.append((version, value, change))
            return bool(taken) and taken[-1][1] == final and sum(c for *_, c in taken)

        taken: list[tuple[int, int, int]] = []  # (version, value, change) of the entries taken
        assert await eventually(group_total, "the consumer group reads the stream", 10) == final
        assert not await stream.exists(f"counters:events:globex/{NS}:video:1")

        # kill -9 the node that published video:1: its successor takes the shard over
        publisher.kill()
        await cluster.wait_marked_down(reader, publisher)
        alive = [n for n in nodes if n is not publisher]
        last = await write_in_order(cluster, alive, "acme", "video:1", 3)
        after_kill = final + last[-1]
        await resumed.until(
            lambda: resumed.changes("video:1")[-1]["value"] == after_kill,
            "the feed goes on after the publisher's death",
        )
    # a stream's request time is the time to its opening, not its life (seconds, here)
    route = 'route="/v1/namespaces/{namespace}/events"'
    opened = await metric(cluster, reader, "counters_http_request_duration_seconds_sum", route)
    assert 0 < opened < 0.5, opened
    assert await metric(cluster, reader, "counters_events_stream_lag_seconds_count") > 0
    await stream.aclose()


async def test_a_consumer_that_stops_reading_is_cut_off_and_one_too_late_sees_a_gap(
    cluster: Cluster,
):
    cluster.settings.update(
        COUNTERS_EVENTS_STALL_S="0.5",
        COUNTERS_EVENTS_LOG_MAX="500",
        COUNTERS_EVENTS_MAX_STREAMS="1",
    )
    (node,) = await cluster.start(1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, then silence
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(f"GET /v1/namespaces/{NS}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        await eventually(lambda: metric(cluster, node, "counters_events_streams "), "stream open")
        status, body = await cluster.get(node, f"/v1/namespaces/{NS}/events")  # one too many
        assert status == 503 and body["type"].endswith("/too-many-streams"), body
        path = f"/v1/namespaces/{NS}/batch"

        async def flood() -> float:
            for round_ in range(2):
                ops = [{"op": "increment", "name": f"c{round_}-{i}"} for i in range(1000)]
                status, body = await cluster.request("POST", node, path, json={"ops": ops})
                assert status == 200, body
            return await metric(cluster, node, "counters_events_consumers_dropped_total")

        assert await eventually(flood, "the silent consumer cut off", 30, every=0.5) == 1
        assert await metric(cluster, node, "counters_events_streams ") == 0
        sock.settimeout(10)
        received = b""
        while chunk := await asyncio.to_thread(sock.recv, 65536):
            received += chunk
        assert b"event: cutoff" in received[-400:], received[-400:]
    finally:
        sock.close()

    # Resuming from the first event it got is too late: the log keeps 500 events
    first_id = received.split(b"id: ", 1)[1].split(b"\n", 1)[0].decode()
    assert cluster.session is not None
    headers = {"Last-Event-ID": first_id}
    async with SSE(cluster.session, f"{node.url}/v1/namespaces/{NS}/events", headers) as late:
        await late.until(lambda: late.events, "the late stream's first event")
        gap = late.events[0]
        assert gap["event"] == "gap" and gap["data"]["node"] == "n1", late.events[:2]
        assert gap["data"]["oldest_held_after"] > int(first_id.split(":")[1])
        await late.until(lambda: len(late.events) > 400, "the events still held")
        assert all(e["event"] == "change" for e in late.events[1:])


async def test_the_node_keeps_serving_while_its_event_sink_is_down(
    private_redis: RedisServer, cluster: Cluster
):
    cluster.settings.update(COUNTERS_EVENTS_REDIS_URL=private_redis.url)
    (node,) = await cluster.start(1)
    key = f"counters:events:default/{NS}"
    private_redis.stop()
    for delta in (1, 2, 3):
        status, body = await cluster.increment(node, NS, "x", delta)
        assert status == 200, body
        await asyncio.sleep(0.12)  # one event each: a coalescing interval apart

    async def degraded() -> dict[str, Any] | None:
        status, body = await cluster.get(node, "/readyz")
        assert status == 200, body  # ready all along
        return body if body["degraded"] and body["event_sinks"][0]["backlog"] == 3 else None

    body = await eventually(degraded, "the sink's outage in /readyz", 15)
    assert "event sink redis-streams degraded: backlog 3" in body["degraded"][0], body
    assert await metric(cluster, node, "counters_events_sink_up") == 0
    assert await metric(cluster, node, "counters_events_sink_backlog") == 3
    private_redis.start()
    client = redis.Redis.from_url(private_redis.url)
    try:

        async def delivered() -> list[int] | None:
            values = [int(fields[b"value"]) for _, fields in await client.xrange(key)]
            return values if len(values) >= 3 else None

        assert await eventually(delivered, "the backlog delivered", 15) == [1, 3, 6]
        status, body = await cluster.get(node, "/readyz")
        assert status == 200 and not body["degraded"], body
    finally:
        await client.aclose()


async def test_the_feed_follows_counters_through_a_join(cluster: Cluster):
    """A node joins while writes go on: coordinators change for a quarter of the shards,
    and every counter's last event still carries its total, its values never going back
    (once, a counter went 60, 68, 63, 69: a new coordinator republished its lagging replica's
    value; tests/node/realtime/test_feed_order.py has that hand-over step by step)."""
    nodes = await cluster.start(3)
    names = [f"j{i}" for i in range(40)]
    assert cluster.session is not None
    async with SSE(cluster.session, f"{nodes[0].url}/v1/namespaces/{NS}/events", {}) as feed:
        stream = WriteStream(cluster, NS, names, workers=3)
        stream.start(nodes)
        await stream.run_until(60)
        fourth = cluster.add("n4")
        fourth.start(cluster.seeds())
        await cluster.wait_ready(fourth)
        await cluster.settled_ring([*nodes, fourth], {"n1", "n2", "n3", "n4"})
        stream.targets.append(fourth)
        await stream.run_until(60)
        await stream.stop()
        await stream.check_totals(nodes[0])

        moved = [n for n in names if await coordinator_of(cluster, nodes[0], "default", n) == "n4"]
        assert moved, "no counter's coordinator moved to n4"

        def caught_up() -> bool:
            return all(
                feed.changes(name) and feed.changes(name)[-1]["value"] == total
                for name, total in stream.totals.items()
            )

        await feed.until(caught_up, "every counter's last event at its total", 20)
        for name in names:
            values = [e["value"] for e in feed.changes(name)]
            assert values == sorted(values), (name, values)  # in order, repeats allowed

"""The change feed on three real nodes carries a counter's swing across the whole int64 range.

A counter goes to INT64_MAX, then, in one batch, down by INT64_MAX twice and by 1 to
INT64_MIN: every value stays in int64, but the event's change is -(2^64 - 1), past what
msgpack carries. A stream on every node, not only the one that published the event, must
show it with its exact value and change, and go on with the namespace's later events: the
nodes read each other's logs over the peer link that replication shares."""

from __future__ import annotations

import contextlib

import aiohttp

from tests.cluster.harness import Cluster
from tests.cluster.test_feed import SSE
from tests.support import eventually

INT64_MAX = 2**63 - 1
NS = "edge"


async def test_a_swing_across_int64_reaches_streams_on_every_node(cluster: Cluster) -> None:
    nodes = await cluster.start(3)
    base = f"/v1/namespaces/{NS}"
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(SSE(session, node.url + f"{base}/events", {}))
            for node in nodes
        ]

        async def tailing() -> bool:
            # a stream's first read only finds where the logs are: write until each has one
            status, _ = await cluster.increment(nodes[0], NS, "ready", 1)
            assert status == 200
            return all(stream.changes("ready") for stream in streams)

        await eventually(tailing, "every stream reads the logs", 15, every=0.2)
        status, _ = await cluster.increment(nodes[0], NS, "swing", INT64_MAX)
        assert status == 200
        for stream in streams:  # published alone: the batch's event is a change of its own
            await stream.until(lambda s=stream: s.changes("swing"), "the swing up")
        ops = [
            {"op": "increment", "name": "swing", "delta": delta}
            for delta in (-INT64_MAX, -INT64_MAX, -1)
        ]
        status, body = await cluster.request("POST", nodes[0], f"{base}/batch", json={"ops": ops})
        assert status == 200, body
        status, _ = await cluster.increment(nodes[0], NS, "after", 1)
        assert status == 200

        def swung_down(stream: SSE) -> bool:
            last = stream.changes("swing")[-1]
            return last["value"] == -INT64_MAX - 1 and bool(stream.changes("after"))

        for node, stream in zip(nodes, streams, strict=True):
            await stream.until(lambda s=stream: swung_down(s), f"the swing down on {node.node_id}")
            [_, down] = stream.changes("swing")
            assert down["change"] == -(2**64 - 1), down

"""DELETE resets a counter: it clears what the replicas observed, concurrent increments
survive, the name stays usable, and a repeated reset is harmless."""

from __future__ import annotations

import time

from tests.cluster.harness import Cluster
from tests.cluster.write_stream import WriteStream

NS = "resets"


async def test_reset_during_increments_on_other_nodes(cluster: Cluster):
    nodes = await cluster.start(3)
    stream = WriteStream(cluster, NS, ["views"], workers=4)
    stream.start(nodes[1:])  # increments keep arriving through the other two nodes
    await stream.run_until(150)
    started = time.monotonic()
    status, body = await cluster.request("DELETE", nodes[0], f"/v1/namespaces/{NS}/counters/views")
    finished = time.monotonic()
    assert status == 200 and body["consistency"] == "quorum", body
    await stream.run_until(150)
    await stream.stop()
    assert not stream.errors and not stream.ambiguous["views"] and not stream.refused, (
        stream.errors[:3],
        stream.refusals,
    )
    total = (await cluster.agreed(NS, ["views"], nodes))["views"]
    # Everything acknowledged before the reset began was observed by it (R + W > N) and is
    # cleared; everything sent after it answered is counted; what overlapped may go either way.
    surely_kept = sum(d for sent, _, _, d in stream.events if sent > finished)
    maybe_kept = sum(d for _, acked, _, d in stream.events if acked >= started)
    assert surely_kept <= total <= maybe_kept, (surely_kept, total, maybe_kept)
    assert surely_kept > 0


async def test_repeated_reset_is_harmless_and_the_name_stays_usable(cluster: Cluster):
    nodes = await cluster.start(3)
    status, _ = await cluster.increment(nodes[0], NS, "likes", 7)
    assert status == 200
    for node in nodes:  # the same reset from every node, twice
        for _ in range(2):
            status, body = await cluster.request(
                "DELETE", node, f"/v1/namespaces/{NS}/counters/likes?consistency=all"
            )
            assert status == 200 and body["value"] == 0, (status, body)
    status, body = await cluster.increment(nodes[1], NS, "likes", 3)
    assert status == 200 and body["value"] == 3, (status, body)
    for node in nodes:
        assert await cluster.value(node, NS, "likes", "all") == 3
    status, body = await cluster.request(
        "DELETE", nodes[2], f"/v1/namespaces/{NS}/counters/never-written"
    )
    assert status == 200 and body["value"] == 0, (status, body)
    status, body = await cluster.request("DELETE", nodes[2], f"/v1/namespaces/{NS}/counters/a..b")
    assert status == 400

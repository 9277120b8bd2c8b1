"""Counts survive the death of the whole cluster: exactly in sync mode, within one persist
interval in async mode. These run on the embedded store (SQLite in each data dir)."""

from __future__ import annotations

import time

from tests.cluster.harness import Cluster
from tests.cluster.write_stream import WriteStream

NS = "durability"
INTERVAL_S = 0.2


async def _kill_everything_mid_stream(
    cluster: Cluster, durability: str
) -> tuple[WriteStream, float]:
    """The stream, stopped after every node was killed -9 under it and restarted; and a
    time.monotonic() before which each node said everything it applied was durable."""
    cluster.settings.update(
        COUNTERS_DURABILITY=durability, COUNTERS_PERSIST_INTERVAL_S=str(INTERVAL_S)
    )
    nodes = await cluster.start(3)
    stream = WriteStream(cluster, NS, [f"d{i}" for i in range(10)])
    stream.start(nodes)
    started = time.time()
    await stream.run_for(2.0)  # many persist intervals, so the loss window is a small part
    # Each node says up to when everything it applied is durable; that only moves forward,
    # so what it says just before the kill still holds at the kill.
    through = [(await cluster.ring(node))["persistence"]["durable_through"] for node in nodes]
    assert all(at > started for at in through), (started, through)  # they did flush
    # A write acknowledged before every node's mark was applied (on W replicas) before it.
    durable_before = time.monotonic() - (time.time() - min(through))
    stream.killed_at = time.monotonic()
    for node in nodes:  # kill -9 all three while increments are in flight
        node.kill()
    await stream.stop()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    return stream, durable_before


async def test_sync_mode_loses_no_acknowledged_increment_when_every_node_dies(cluster: Cluster):
    stream, _ = await _kill_everything_mid_stream(cluster, "sync")
    nodes = list(cluster.nodes.values())
    totals = await cluster.agreed(NS, stream.names, nodes)
    for name in stream.names:
        low, high = stream.acked[name], stream.acked[name] + stream.ambiguous[name]
        assert low <= totals[name] <= high, (name, low, totals[name], high)
    status, body = await cluster.increment(nodes[0], NS, "d0", 1)
    assert status == 200 and body["durability"] == "sync", (status, body)


async def test_async_mode_loses_at_most_the_last_interval_and_says_how_much(cluster: Cluster):
    stream, durable_before = await _kill_everything_mid_stream(cluster, "async")
    totals = await cluster.agreed(NS, stream.names, list(cluster.nodes.values()))
    acked = sum(stream.acked.values())
    lost = {name: max(0, stream.acked[name] - totals[name]) for name in stream.names}
    # Only what was acknowledged after the nodes' last flushes began may be missing: about
    # one persist interval, as long as the nodes' flushes actually took (a loaded machine
    # stretches it; the nodes' own marks say by how much, so no wall-clock guess is needed).
    window = stream.killed_at - durable_before
    recent = dict.fromkeys(stream.names, 0)
    for _, acknowledged, name, delta in stream.events:
        if acknowledged >= durable_before:
            recent[name] += delta
    print(
        f"\nasync durability: {sum(lost.values())} of {acked} acknowledged increments lost "
        f"({100 * sum(lost.values()) / acked:.2f}%); {sum(recent.values())} were acknowledged "
        f"in the last {window:.2f}s, since the nodes' last flushes began"
    )
    assert all(lost[name] <= recent[name] for name in stream.names), (lost, recent)

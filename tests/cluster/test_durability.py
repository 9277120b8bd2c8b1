"""Counts survive the death of the whole cluster: exactly in sync mode, within one persist
interval in async mode. These run on the embedded store (SQLite in each data dir)."""

from __future__ import annotations

import time

from tests.cluster.harness import Cluster, WriteStream

NS = "durability"
INTERVAL_S = 0.2


async def _kill_everything_mid_stream(cluster: Cluster, durability: str) -> WriteStream:
    cluster.settings.update(
        COUNTERS_DURABILITY=durability, COUNTERS_PERSIST_INTERVAL_S=str(INTERVAL_S)
    )
    nodes = await cluster.start(3)
    stream = WriteStream(cluster, NS, [f"d{i}" for i in range(10)])
    stream.start(nodes)
    await stream.run_for(2.0)  # many persist intervals, so the loss window is a small part
    stream.killed_at = time.monotonic()
    for node in nodes:  # kill -9 all three while increments are in flight
        node.kill()
    await stream.stop()
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    return stream


async def test_sync_mode_loses_no_acknowledged_increment_when_every_node_dies(cluster: Cluster):
    stream = await _kill_everything_mid_stream(cluster, "sync")
    nodes = list(cluster.nodes.values())
    totals = await cluster.agreed(NS, stream.names, nodes)
    for name in stream.names:
        low, high = stream.acked[name], stream.acked[name] + stream.ambiguous[name]
        assert low <= totals[name] <= high, (name, low, totals[name], high)
    status, body = await cluster.increment(nodes[0], NS, "d0", 1)
    assert status == 200 and body["durability"] == "sync"


async def test_async_mode_loses_at_most_the_last_interval_and_says_how_much(cluster: Cluster):
    stream = await _kill_everything_mid_stream(cluster, "async")
    totals = await cluster.agreed(NS, stream.names, list(cluster.nodes.values()))
    acked = sum(stream.acked.values())
    lost = sum(max(0, stream.acked[name] - totals[name]) for name in stream.names)
    # What was acknowledged within the window before the kill (an interval, plus a flush
    # that was under way) is all that may be missing.
    window = 2 * INTERVAL_S
    recent = sum(d for at, d in stream.acked_at if at >= stream.killed_at - window)
    print(
        f"\nasync durability: {lost} of {acked} acknowledged increments lost "
        f"({100 * lost / acked:.2f}%); {recent} were acknowledged in the last {window}s"
    )
    assert lost <= recent

"""A history turn lets the node's event loop run: however many counters changed in a flush
interval, the recorder never holds the loop as long as a peer waits before it judges the
link dead (dial.dead_after: 1.5 x peer_heartbeat_s = 1.5 s by default). Past it, peers drop
their links to the node, and every request on the node waits meanwhile.

A million distinct counters changed within one interval (10 s) is 100,000 changes/s, the
project's throughput target; taking and buffering their values costs seconds of CPU, so the
recorder does it in parts (recorder.RECORD_CHUNK) with a yield between them. Each part
takes tens of ms; the bound is the dead-link time, far from it, so a loaded machine passes.
The heap's million counters are frozen out of the cyclic collector (gc.freeze) while the
turn is timed: a full collection's pause is the heap's (node/base/heap.py), not the turn's.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable
from pathlib import Path

from node.base.config import Config
from node.cluster.dial import dead_after
from node.cluster.membership import Cluster
from node.history.recorder import HistoryBuffer, Recorder
from node.history.sqlite import SqliteHistory
from node.storage.store import CounterStore

COUNTERS = 1_000_000
EVERY_SHARD = 10_000  # counters enough to put one in each of the 256 shards
DEAD_AFTER_S = dead_after(Config(node_id="n1"))
TURN_BOUND_S = 60.0  # what the timed turn may take at most, on a loaded 2-core machine


async def _longest_gap(turn: Awaitable[int]) -> tuple[int, float]:
    """The turn's result, and the longest the loop went without running a 10 ms ticker."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.05)
        async with asyncio.timeout(TURN_BOUND_S):
            result = await turn
        await asyncio.sleep(0.05)
    finally:
        ticking.cancel()
    return result, max(gaps)


async def test_a_history_turn_of_a_million_changed_counters_yields_to_the_loop(
    tmp_path: Path,
) -> None:
    config = Config(node_id="n1", data_dir=str(tmp_path), auth="none")
    store = CounterStore(Cluster(config, 1).shard_of, 86_400_000, track_changes=True)
    history = SqliteHistory(tmp_path / "history.sqlite3")
    recorder = Recorder(
        store, history, lambda shard: shard % 3 == 0, flush_interval_s=10, bucket_s=60
    )
    keys = [("t", "ns", f"c{i}") for i in range(COUNTERS)]
    try:
        for key in keys[:EVERY_SHARD]:
            store.increment(key, "n1:1", 1)
        await recorder.record(time.time())  # the first turn takes every shard over
        recorder.buffer = HistoryBuffer()
        for key in keys:  # the changes of one flush interval
            store.increment(key, "n1:1", 1)
        gc.collect()
        gc.freeze()
        try:
            recorded, longest = await _longest_gap(recorder.record(time.time()))
        finally:
            gc.unfreeze()
    finally:
        await history.close()
    assert recorded > COUNTERS // 4  # a third of the shards' counters
    assert longest < DEAD_AFTER_S, f"one history turn held the loop {longest:.2f} s"

"""CPU cost of the change feed's publisher on the change path (node/realtime/publisher.py).

Run from the repo root:

    .venv/bin/python loadtest/bench_feed.py

Each turn hands the publisher 100,000 changed counters (one change tap turn of a busy node),
then ticks it, as the node's two 0.1 s loops do; the counters are in a real CounterStore,
from which the publisher reads the version each event carries. A node coordinates about a
third of the shards it replicates (N = 3), so it publishes a third of the changes it
sees; the lines show that mix, one where it publishes all, and one with a sink's backlog
to fill. Each figure is CPU seconds (time.process_time) per change over 10 turns, the
median of 3 runs.
"""

from __future__ import annotations

import statistics
import time

from node.realtime.changes import Change
from node.realtime.feed_log import EventLog
from node.realtime.publisher import Publisher
from node.realtime.sinks import SinkPump
from node.storage.store import CounterStore

COUNTERS = 100_000
TURNS = 10
SHARDS = 256


class NullSink:
    name = "null"

    async def publish(self, events: object) -> None:
        pass

    async def close(self) -> None:
        pass


def run(owned_share: float, with_sink: bool) -> float:
    keys = [("acme", "videos", f"video:{i}") for i in range(COUNTERS)]
    # a real store: the publisher reads each published counter's version from it
    store = CounterStore(lambda key: int(key[2][6:]) % SHARDS)
    for key in keys:
        store.increment_slot(key, "n1:1", 1)
    cut = int(SHARDS * owned_share)
    sinks = [SinkPump(NullSink(), capacity=10 * COUNTERS)] if with_sink else []
    publisher = Publisher(
        EventLog(1, max_events=COUNTERS),
        SHARDS,
        lambda shard: shard < cut,
        store.value,
        sinks,
        version_of=store.version,
        min_interval_ms=100,
        recall_ms=10_000,
    )
    now = 1_000_000
    publisher.tick(now - 100)
    spent = 0.0
    for turn in range(TURNS):
        changes = [Change(key, i % SHARDS, turn, turn + 1) for i, key in enumerate(keys)]
        started = time.process_time()
        publisher.on_changes(changes, now)
        publisher.tick(now)
        spent += time.process_time() - started
        now += 100
    return spent / (TURNS * COUNTERS)


def main() -> None:
    for owned_share, with_sink, what in (
        (1 / 3, False, "publishes 1/3 (N = 3), no sink"),
        (1 / 3, True, "publishes 1/3, a Redis sink's backlog"),
        (1.0, False, "publishes every change"),
    ):
        median = statistics.median(run(owned_share, with_sink) for _ in range(3))
        print(f"{what:40} {median * 1e6:5.2f} us CPU per change seen")


if __name__ == "__main__":
    main()

"""Micro-benchmark of the crdt hot paths the node calls on every request.

Run from the repo root:

    .venv/bin/python loadtest/bench_crdt.py

Each line is the median of 5 runs of about 0.2 s each (time.perf_counter).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from crdt.codec import decode_batch, encode_batch
from crdt.pncounter import PNCounter

RUNS = 5
RUN_SECONDS = 0.2
BATCH_SIZE = 1_000


def replica_state(actors: int, seed: int) -> PNCounter:
    """A counter as one replica sees it: every actor has incremented and decremented."""
    state = PNCounter.empty()
    for i in range(actors):
        actor = f"node-{i:03}:1"
        state = state.increment(actor, 1_000 + 7 * i + seed).increment(actor, -(3 + i % 5 + seed))
    return state


def ops_per_second(operation: Callable[[], object]) -> float:
    """Median rate of `operation` over RUNS runs of about RUN_SECONDS each."""
    loops = 1
    while True:  # calibrate: find a loop count that takes about RUN_SECONDS
        start = time.perf_counter()
        for _ in range(loops):
            operation()
        elapsed = time.perf_counter() - start
        if elapsed >= RUN_SECONDS / 10:
            loops = max(1, round(loops * RUN_SECONDS / elapsed))
            break
        loops *= 2
    rates = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(loops):
            operation()
        rates.append(loops / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    three = replica_state(3, seed=0)
    # Two replicas that diverged: each is ahead on some slots, so merge builds a new state.
    three_left = three.increment("node-000:1", 5)
    three_right = three.increment("node-002:1", -2)
    wide_left = replica_state(64, seed=0).increment("node-010:1", 5)
    wide_right = replica_state(64, seed=1)
    # What a read mostly sees: replicas that already agree (equal, but distinct objects).
    wide_same = replica_state(64, seed=0).increment("node-010:1", 5)
    entries = [
        (("tenant", "views", f"video-{i}"), replica_state(3, seed=i)) for i in range(BATCH_SIZE)
    ]
    frame = encode_batch(entries)
    assert decode_batch(frame) == entries
    batch = f"({BATCH_SIZE:,} counters of 3 actors, {len(frame):,} B)"

    benchmarks: list[tuple[str, Callable[[], object]]] = [
        ("PNCounter.increment (3 actors)", lambda: three.increment("node-001:1", 1)),
        ("PNCounter.merge (3 actors)", lambda: three_left.merge(three_right)),
        ("PNCounter.merge (64 actors)", lambda: wide_left.merge(wide_right)),
        ("PNCounter.merge (64 actors, equal states)", lambda: wide_left.merge(wide_same)),
        (f"encode_batch {batch}", lambda: encode_batch(entries)),
        (f"decode_batch {batch}", lambda: decode_batch(frame)),
    ]
    rows: list[tuple[str, str, str]] = [("operation", "rate", "per counter")]
    for name, operation in benchmarks:
        rate = ops_per_second(operation)
        if name.endswith(" B)"):
            rows.append((name, f"{rate:,.0f} frames/s", f"{rate * BATCH_SIZE:,.0f} counters/s"))
        else:
            rows.append((name, f"{rate:,.0f} ops/s", ""))

    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    rows.insert(1, ("-" * widths[0], "-" * widths[1], "-" * widths[2]))
    for name, rate, per_counter in rows:
        print(f"{name:<{widths[0]}}  {rate:>{widths[1]}}  {per_counter:>{widths[2]}}".rstrip())


if __name__ == "__main__":
    main()

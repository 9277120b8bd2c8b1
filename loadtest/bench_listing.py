"""CPU per listing page of one node's store at scale: a pass over every name of the namespace
(how `CounterStore.scan` found a page before node/storage/name_order.py, kept here as the
baseline) against the sorted names it keeps now, in the same process.

Run from the repo root:

    PYTHONPATH=$PWD .venv/bin/python loadtest/bench_listing.py [--counters 1000000]

Fills one store with COUNTERS counters in one namespace over 256 shards (names as
`user:<random>:<i>`), then times, by time.process_time: the first page (the sorted names
built), and pages after random cursors, of `--limit` names, under the prefix `user:` and
under a narrower one; each figure is the median of `--rounds` runs of `--pages` pages, and
every page is checked against the baseline's.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from functools import partial

from node.storage.store import CounterStore
from ring.hashing import key_hash

SHARDS = 256


def baseline(store: CounterStore, ns: str, prefix: str, after: str, *, limit: int) -> list[str]:
    """The pass over every name that scan made before."""
    spaces = [
        names
        for shard in range(SHARDS)
        if (names := store._shards.get(shard, {}).get("t", {}).get(ns)) is not None
    ]
    return heapq.nsmallest(
        limit, (n for names in spaces for n in names if n > after and n.startswith(prefix))
    )


def timed(call, pages: list[str]) -> tuple[float, list[list[str]]]:
    started = time.process_time()
    out = [call(after) for after in pages]
    return (time.process_time() - started) / len(pages), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counters", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    cache: dict[tuple[str, str, str], int] = {}

    def shard_of(key: tuple[str, str, str]) -> int:
        found = cache.get(key)
        if found is None:
            found = cache[key] = key_hash(*key) % SHARDS
        return found

    store = CounterStore(shard_of, 60_000)
    for i in range(args.counters):
        store.increment_slot(("t", "ns", f"user:{rng.randrange(10**6)}:{i}"), "n1:1", 1)
    every = set(range(SHARDS))

    def scan(prefix: str):
        return lambda after: [n for n, _ in store.scan("t", "ns", prefix, after, args.limit, every)]

    started = time.process_time()
    scan("user:")("")
    print(f"{args.counters:,} counters, pages of {args.limit}")
    print(f"first page (sorted names built): {(time.process_time() - started) * 1000:.1f} ms")
    for prefix in ("user:", "user:5"):
        old, new = [], []
        for _ in range(args.rounds):
            afters = [f"user:{rng.randrange(10**6)}" for _ in range(args.pages)]
            if prefix != "user:":
                afters = [prefix + a[len(prefix) :] for a in afters]
            spent, before = timed(partial(baseline, store, "ns", prefix, limit=args.limit), afters)
            old.append(spent)
            spent, now = timed(scan(prefix), afters)
            new.append(spent)
            assert now == before, "a page differs from the pass over every name"
        o, n = statistics.median(old), statistics.median(new)
        print(
            f"prefix {prefix!r}: pass over every name {o * 1000:.1f} ms per page, "
            f"sorted names {n * 1000:.2f} ms per page ({o / n:.0f}x less CPU)"
        )


if __name__ == "__main__":
    main()

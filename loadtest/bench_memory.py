"""Memory per counter and CPU per store call of the node's in-memory store (issue 13).

Run from the repo root (each measurement runs in a fresh child process):

    PYTHONPATH=$PWD .venv/bin/python loadtest/bench_memory.py [--counters 1000000]

Prints, for COUNTERS counters of 3 actors each held by one CounterStore:
- bytes per counter by tracemalloc (what the store's structures allocate; `node`: with the
  node's shard cache, a real Cluster.shard_of, as well) and by RSS (the
  process's resident memory before and after building the store, without tracemalloc),
  with the dirty sets taken every FLUSH_EVERY new counters as a node's write-behind does;
- CPU µs per call (time.process_time) of store.increment (an existing counter, the own
  actor), store.merge (another actor's slot, as a replica receives it), store.get, the
  store's part of a coordinated increment and of a replica's merge of a slot as the node
  does them (`coordinate`, `replica`: with the slot-level calls when the store has them),
  and store.increment of a new counter: the median of three runs of OPS calls each.

Keys are built as a node builds them from requests and frames: fresh tenant, namespace and
name strings per counter (nothing interned by the caller). The shard function is the
node's: ring.key_hash behind a dict cache like node/cluster/membership.py's shard_of,
which is left out of the memory figures (it is not the store's) and is warm in the CPU runs.
Run it against another checkout (PYTHONPATH=/path/to/it) to compare before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from crdt import PNCounter
from node.base.config import Config
from node.base.keys import Key
from node.cluster.membership import Cluster
from node.storage.store import CounterStore
from ring import key_hash

SHARDS = 256
ACTORS = ("n1:1", "n2:1", "n3:1")
TENANT, NAMESPACE = "acme", "bench"
OPS = 200_000
RUNS = 3
FLUSH_EVERY = 16_000  # counters created between two flushes: about 1 s at today's rate


def fresh(text: str) -> str:
    """A new str object equal to text, as parsing a request or a frame makes one."""
    return (text + "/")[:-1]


def key_of(i: int) -> Key:
    return (fresh(TENANT), fresh(NAMESPACE), f"k{i}")


class ShardCache:
    """The node's shard_of: the hash behind a dict cache (node/cluster/membership.py)."""

    def __init__(self) -> None:
        self.cache: dict[Key, int] = {}

    def __call__(self, key: Key) -> int:
        shard = self.cache.get(key)
        if shard is None:
            shard = self.cache[key] = key_hash(*key) & (SHARDS - 1)
        return shard


def fill(store: CounterStore, counters: int) -> None:
    """COUNTERS counters, each with 3 actors' slots. The dirty sets are taken every
    FLUSH_EVERY counters, as the write-behind and the history recorder take them."""
    for i in range(counters):
        key = key_of(i)
        store.increment(key, ACTORS[0], 1 + i % 1000)
        store.merge(key, PNCounter.from_slot(ACTORS[1], 5 + i % 7, i % 3))
        store.merge(key, PNCounter.from_slot(ACTORS[2], 1_000_000 + i, 0))
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            store.take_dirty()
            store.take_history_dirty()
    store.take_dirty()
    store.take_history_dirty()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_tracemalloc(counters: int) -> dict[str, Any]:
    shard_of = ShardCache()
    for i in range(counters):  # the cache is the caller's: filled before tracing starts
        shard_of(key_of(i))
    gc.collect()
    tracemalloc.start()
    store = CounterStore(shard_of)
    fill(store, counters)
    shard_of.cache.clear()  # keys the cache kept alive would count against the store
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) == counters
    return {"tracemalloc_bytes_per_counter": current / counters}


def measure_node(counters: int) -> dict[str, Any]:
    """tracemalloc of the store and of the node's own shard_of (Cluster's cache) together."""
    with tempfile.TemporaryDirectory() as data_dir:
        config = Config(node_id="n1", listen="127.0.0.1:7000", data_dir=data_dir)
        cluster = Cluster(config, 1)
        gc.collect()
        tracemalloc.start()
        store = CounterStore(cluster.shard_of)
        fill(store, counters)
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert len(store) == counters
    return {"node_bytes_per_counter": current / counters}


def measure_rss(counters: int) -> dict[str, Any]:
    shard_of = lambda key: key_hash(*key) & (SHARDS - 1)  # noqa: E731 - no cache to count
    gc.collect()
    before = rss_bytes()
    store = CounterStore(shard_of)
    fill(store, counters)
    gc.collect()
    after = rss_bytes()
    assert len(store) == counters
    return {"rss_bytes_per_counter": (after - before) / counters}


def cpu_us(call: Callable[[int], object], ops: int) -> float:
    """Median over RUNS runs of the CPU µs per call of call(i) for i in range(ops)."""
    runs = []
    for _ in range(RUNS):
        start = time.process_time()
        for i in range(ops):
            call(i)
        runs.append((time.process_time() - start) / ops * 1e6)
    return statistics.median(runs)


def measure_cpu(counters: int) -> dict[str, Any]:
    counters = min(counters, OPS)
    shard_of = ShardCache()
    store = CounterStore(shard_of)
    keys = [key_of(i) for i in range(counters)]
    for key in keys:
        shard_of(key)
    fill(store, counters)
    mask = counters - 1 if counters & (counters - 1) == 0 else None
    pick = (lambda i: keys[i & mask]) if mask is not None else (lambda i: keys[i % counters])
    increment, merge, get = store.increment, store.merge, store.get
    slot = [2_000_000]

    def replicate(i: int) -> object:
        slot[0] += 1
        return merge(pick(i), PNCounter.from_slot(ACTORS[2], slot[0], 0))

    created = [0]

    def create(i: int) -> object:
        created[0] += 1
        key = ("acme", "new", f"c{created[0]}")
        shard_of(key)
        return increment(key, ACTORS[0], 1)

    from_slot_us = cpu_us(lambda i: PNCounter.from_slot(ACTORS[2], i + 1, 0), OPS)
    result = {
        "increment_us": cpu_us(lambda i: increment(pick(i), ACTORS[0], 1), OPS),
        "merge_us": cpu_us(replicate, OPS) - from_slot_us,  # the store's part only
        "get_us": cpu_us(lambda i: get(pick(i)), OPS),
        "coordinate_us": cpu_us(coordinator_op(store, pick), OPS),
        "replica_us": cpu_us(replica_op(store, pick, slot), OPS),
        "create_us": cpu_us(create, OPS),  # includes the hash: a new key misses the cache
    }
    return result


def coordinator_op(store: CounterStore, pick: Callable[[int], Key]) -> Callable[[int], object]:
    """What node/coordination/coordinator.py asks of the store per increment of a batch:
    whether the counter exists (the quota's admit), apply it, keep the changed slot to
    send, then read the value to answer."""
    actor = ACTORS[0]
    if hasattr(store, "increment_slot"):
        increment_slot, value = store.increment_slot, store.value

        def packed(i: int) -> object:
            key = pick(i)
            assert key in store
            p, _ = increment_slot(key, actor, 1)
            return PNCounter.from_slot(actor, p, 0), value(key)

        return packed
    increment, get = store.increment, store.get

    def objects(i: int) -> object:
        key = pick(i)
        assert get(key) is not None
        _, delta = increment(key, actor, 1)
        state = get(key)
        return delta, state.saturated_value() if state is not None else None

    return objects


def replica_op(
    store: CounterStore, pick: Callable[[int], Key], slot: list[int]
) -> Callable[[int], object]:
    """What node/http/peer_endpoint.py asks of the store per slot of a SLOTS frame: merge
    the slot, then the key's share (to answer None when the sender holds the same)."""
    actor = ACTORS[1]
    if hasattr(store, "merge_slot"):
        merge_slot = store.merge_slot

        def packed(i: int) -> object:
            slot[0] += 1
            return merge_slot(pick(i), actor, slot[0], 0)

        return packed
    merge, share = store.merge, store.share

    def objects(i: int) -> object:
        slot[0] += 1
        key = pick(i)
        merge(key, PNCounter.from_slot(actor, slot[0], 0))
        return share(key)

    return objects


MEASURES = {
    "tracemalloc": measure_tracemalloc,
    "node": measure_node,
    "rss": measure_rss,
    "cpu": measure_cpu,
}


def child(measure: str, counters: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", measure, "--counters", str(counters)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ},
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counters", type=int, default=1_000_000, help="counters to hold")
    parser.add_argument("--child", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument(
        "--measures", nargs="+", choices=sorted(MEASURES), default=list(MEASURES),
        help="what to measure (default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.counters < 1:
        parser.error("--counters must be at least 1")
    if args.child:
        print(json.dumps(MEASURES[args.child](args.counters)))
        return
    import node.storage.store as store_module

    print(f"store: {store_module.__file__}")
    print(f"{args.counters:,} counters of {len(ACTORS)} actors, {SHARDS} shards")
    results: dict[str, Any] = {}
    for measure in args.measures:
        results.update(child(measure, args.counters))
    for name, what in (
        ("tracemalloc", "store"),
        ("node", "store and the node's shard cache"),
        ("rss", "RSS"),
    ):
        if f"{name}_bytes_per_counter" in results:
            figure = results[f"{name}_bytes_per_counter"]
            print(f"  {name:<13} {figure:8.0f} B per counter ({what})")
    for name in ("increment", "merge", "get", "coordinate", "replica", "create"):
        if f"{name}_us" in results:
            figure = results[f"{name}_us"]
            print(f"  {name:<13} {figure:8.2f} µs CPU per call (median of {RUNS})")


if __name__ == "__main__":
    main()

"""CPU per real-time query at a million counters, in one process (issue 14): what a node
spends answering aggregates and top-k for its shards, apart from HTTP and a busy machine.

    .venv/bin/python loadtest/bench_queries.py                      # this tree
    .venv/bin/python loadtest/bench_queries.py --code ../main,.     # A/B, interleaved

A store of `--counters` counters in 256 shards, each made then incremented within the hour
(as bench_scale.py's fill), feeds a Realtime through the change tap; each query of
bench_realtime.py's set is built once (its index or ranking), then asked `--repeat` times:
"repeated" with nothing changed in between (a dashboard polling), and "changed" with one
counter of the namespace changed and handed on before each (so nothing computed before may
be reused). Figures are CPU µs per query (the thread's CPU time of prepare, answer and the
JSON body), medians of the repeats.

With several `--code` trees, each round runs every tree once in its own process, one after
the other, `--rounds` times (interleaved, so the machine's load falls on both alike), and
prints the median over rounds of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUERIES: dict[str, dict[str, Any]] = {
    "aggregate": {"kind": "aggregate"},
    "aggregate_window_1h": {"kind": "aggregate", "span_min": 60},
    "aggregate_prefix_10pct": {"kind": "aggregate", "prefix": "c00"},
    "top10_value": {"kind": "top", "k": 10},
    "top1000_value": {"kind": "top", "k": 1000},
    "top10_value_prefix": {"kind": "top", "k": 10, "prefix": "c001"},
    "top10_change_1h": {"kind": "top", "k": 10, "by": "change", "span_min": 60},
    "top1000_change_1h": {"kind": "top", "k": 1000, "by": "change", "span_min": 60},
}
SHARDS = 256
MINUTE_MS = 60_000


async def _measure(counters: int, repeat: int) -> dict[str, dict[str, float]]:
    from node.http.bodies import encode
    from node.realtime.changes import ChangeTap
    from node.realtime.query import By, Kind, Query
    from node.realtime.service import Realtime
    from node.storage.store import CounterStore
    from ring.hashing import key_hash

    def shard_of(key: tuple[str, str, str]) -> int:
        return key_hash(*key) & (SHARDS - 1)

    clock = [10_000 * MINUTE_MS]
    store = CounterStore(shard_of, track_changes=True)
    realtime = Realtime(store, SHARDS, lambda s: True, lambda: True, True, lambda: clock[0])
    tap = ChangeTap(store, shard_of, [realtime], clock_ms=lambda: clock[0])
    realtime.observe(clock[0])
    for first in (True, False):
        for i in range(counters):
            store.increment_slot(("t", "scale", f"c{i:07d}"), "a:1", 1 + i % 5 if first else 1)
        await tap.turn()
        list(store.take_dirty()), store.take_history_dirty()  # as the node's flushes do
        clock[0] += 1_000
    shards = tuple(range(SHARDS))

    def query(fields: dict[str, Any]) -> Query:
        kind, by = Kind(fields["kind"]), By(fields.get("by", "value"))
        rest = {k: v for k, v in fields.items() if k not in ("kind", "by")}
        return Query(kind, "t", "scale", by=by, at_ms=clock[0], shards=shards, **rest)

    async def once(fields: dict[str, Any]) -> float:
        began = time.thread_time_ns()
        asked = query(fields)
        await realtime.prepare(asked)
        answer = realtime.answer(asked)
        top = [{"name": n, "value": v, "change": c} for n, v, c in answer.top]
        encode({"counters": answer.counters, "total": answer.total, "top": top})
        return (time.thread_time_ns() - began) / 1_000

    figures: dict[str, dict[str, float]] = {}
    for label, fields in QUERIES.items():
        await once(fields)  # builds what the rest read
        repeated = [await once(fields) for _ in range(repeat)]
        changed = []
        for i in range(repeat):
            store.increment_slot(("t", "scale", f"c{i % counters:07d}"), "a:1", 1)
            await tap.turn()
            clock[0] += 1
            changed.append(await once(fields))
        figures[label] = {
            "repeated_us": statistics.median(repeated),
            "changed_us": statistics.median(changed),
        }
    return figures


def _worker(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(args.worker).resolve()))
    import node

    figures = asyncio.run(_measure(args.counters, args.repeat))
    print(f"code: {node.__file__}", file=sys.stderr)
    print(json.dumps(figures))
    return 0


def _table(results: dict[str, list[dict[str, dict[str, float]]]]) -> list[str]:
    trees = list(results)
    lines = ["query".ljust(24) + "".join(f"{t[-18:]:>22}" for t in trees) + "   (CPU us/query)"]
    for label in QUERIES:
        for mode in ("repeated_us", "changed_us"):
            cells = []
            for tree in trees:
                runs = [run[label][mode] for run in results[tree] if label in run]
                cells.append(f"{statistics.median(runs):>22,.0f}" if runs else f"{'-':>22}")
            lines.append(f"{label + ' ' + mode[:-3]:<24}" + "".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=100, help="queries of each kind and mode")
    parser.add_argument("--code", default=str(HERE.parent), help="trees, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, interleaved")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    trees = [str(Path(tree).resolve()) for tree in args.code.split(",")]
    results: dict[str, list[dict[str, dict[str, float]]]] = {tree: [] for tree in trees}
    for round_number in range(args.rounds):
        for tree in trees:
            print(f"round {round_number + 1}: {tree}", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--worker", tree]
            command += ["--counters", str(args.counters), "--repeat", str(args.repeat)]
            env = {**os.environ, "PYTHONPATH": tree}  # this tree's code, not the venv's
            done = subprocess.run(
                command, capture_output=True, text=True, check=True, cwd=tree, env=env
            )
            results[tree].append(json.loads(done.stdout.splitlines()[-1]))
    print("\n".join(_table(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

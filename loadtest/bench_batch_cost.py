"""CPU per batch at low concurrency, A/B of two checkouts: what a request costs, fixed part
and per op, keyed or not.

    .venv/bin/python loadtest/bench_batch_cost.py --a /path/to/old --b . --rounds 3 \
        --cases keyed:1:200 keyed:100:60 plain:100:60

Both systems run side by side (3 nodes, N=3 W=2, each node from its own checkout, as
bench_ab.py starts them); each case ("keyed" under a fresh Idempotency-Key per request, or
"plain", batch size, requests) sends that many batches of uniform random counters from 4
concurrent clients spread over the nodes, A then B (B then A the next round), and reads the
nodes' CPU time (user + system, from /proc) around it. Unlike bench.py's saturating wrk
runs, the machine is far from full, so the CPU per batch moves less with what else runs;
batches of 1 and of 100 ops split a request's cost into its fixed part and its part per op.
Prints every run, then per case the medians of the rounds: CPU ms per batch, latency, B/A.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
from bench_ab import system_from
from bench_systems import Processes

CLIENTS = 4
COUNTERS = 100_000


async def run_case(
    urls: list[str], processes: Processes, keyed: bool, size: int, n: int
) -> tuple[float, float]:
    """(CPU ms per batch, wall ms per batch) of n batches of `size` increments."""
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            url = urls[index % len(urls)] + "/v1/namespaces/cost/batch"
            ops = [
                {"op": "increment", "name": f"c{random.randrange(COUNTERS)}", "delta": 1}
                for _ in range(size)
            ]
            headers = {"Content-Type": "application/json"}
            if keyed:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            async with session.post(url, data=json.dumps({"ops": ops}), headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"{r.status}: {(await r.text())[:300]}")
                await r.read()

        async def client(first: int) -> None:
            for index in range(first, n, CLIENTS):
                await one(index)

        cpu, started = processes.cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(CLIENTS)))
        wall = time.perf_counter() - started
        return 1e3 * (processes.cpu_seconds() - cpu) / n, 1e3 * wall / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the old one)")
    parser.add_argument("--b", required=True, type=Path, help="checkout B (the new one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["keyed:1:200", "keyed:100:60"])
    args = parser.parse_args()
    cases = []
    for text in args.cases:
        kind, size, count = text.split(":")
        if kind not in ("keyed", "plain"):
            parser.error(f"a case is keyed|plain:size:requests, not {text!r}")
        cases.append((kind, int(size), int(count)))
    args.a, args.b = args.a.resolve(), args.b.resolve()  # before the chdir (bench_ab.py)
    workdir = Path(tempfile.mkdtemp(prefix="counters-cost-"))
    os.chdir(workdir)  # `python -m node` must not find a checkout in the working directory
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with ExitStack() as stack:
            sides = {}
            for label, tree in (("A", args.a), ("B", args.b)):
                (workdir / label).mkdir()
                system = system_from(tree, label.lower(), "n3", workdir / label)
                processes, urls = stack.enter_context(system)
                sides[label] = (urls, processes)
                asyncio.run(run_case(urls, processes, True, 100, 20))  # warm up
            for round_no in range(args.rounds):
                order = ("A", "B") if round_no % 2 == 0 else ("B", "A")
                for kind, size, count in cases:
                    case = f"{kind}:{size}"
                    for label in order:
                        urls, processes = sides[label]
                        cpu, wall = asyncio.run(
                            run_case(urls, processes, kind == "keyed", size, count)
                        )
                        results.setdefault((label, case), []).append((cpu, wall))
                        print(f"round {round_no + 1} {label} {case:<10} {cpu:7.2f} CPU ms/batch "
                              f"{wall:7.2f} ms/batch", flush=True)  # fmt: skip
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedians of {args.rounds} rounds; A = {args.a}, B = {args.b}")
    for kind, size, _ in cases:
        case = f"{kind}:{size}"
        cpu = {s: statistics.median(c for c, _ in results[(s, case)]) for s in "AB"}
        wall = {s: statistics.median(w for _, w in results[(s, case)]) for s in "AB"}
        a, b = cpu["A"], cpu["B"]
        print(
            f"{case:<10} CPU ms/batch A {a:6.2f} B {b:6.2f} ({b / a:.2f}x; B {1e3 * b / size:.0f}"
            f" us/op)  ms/batch A {wall['A']:6.2f} B {wall['B']:6.2f}"
            f" ({wall['B'] / wall['A']:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

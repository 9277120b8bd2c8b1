"""Paired A/B of two checkouts: both systems up side by side, wrk alternating between them.

    .venv/bin/python loadtest/bench_ab.py --a /path/to/old --b /path/to/new --rounds 3 \
        --scenarios increment_uniform batch_uniform --duration 6

On a shared machine the load of everything else moves wall-clock rates by 2x from one
minute to the next, and with them the CPU per op (at a lower rate a node's fixed
background work is shared by fewer ops). So rather than run one checkout's bench after the
other's, this starts both systems at once (each node process from its own checkout, by
PYTHONPATH, from a neutral working directory) and alternates wrk between them, scenario
by scenario, A then B then A..., so each pair of runs meets the same weather. The system
not measured is idle meanwhile (a few % of a core). Each run is bench.py's measure(): its
wrk scripts, warm-up and CPU accounting (user + system time of the system's processes).
It prints every run, then the median of the rounds for each side and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench
from bench_systems import Processes, start_cluster

SYSTEM_SHAPES = {"n3": (3, 3, 2), "n1": (1, 1, 1)}  # nodes, replicas, quorum


@contextlib.contextmanager
def system_from(
    tree: Path, name: str, shape: str, workdir: Path
) -> Iterator[tuple[Processes, list[str]]]:
    """A system whose node processes import the checkout at `tree`."""
    processes = Processes(workdir)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        nodes, replicas, quorum = SYSTEM_SHAPES[shape]
        urls = start_cluster(processes, name, nodes, replicas, quorum)
    except BaseException:
        processes.stop_all()
        raise
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        yield processes, urls
    finally:
        processes.stop_all()


def per_op(result: dict[str, Any], ops: int) -> float:
    cpu = result.get("cpu_us_per_request")
    return float(cpu) / ops if isinstance(cpu, (int, float)) else float("nan")


def report(
    args: argparse.Namespace,
    runs: list[tuple[str, str, dict[str, Any]]],
    idle: dict[str, list[float]],
) -> None:
    """Medians per side and scenario: CPU us per op as measured, and net of the side's idle
    CPU (its gossip, anti-entropy and timers, measured while the other side ran), which at
    the low rates of a loaded machine is a large share of each op's CPU."""
    idle_rate = {side: statistics.median(rates) if rates else 0.0 for side, rates in idle.items()}
    print(f"\nmedians of {args.rounds} rounds; A = {args.a}, B = {args.b}")
    print(f"idle CPU while the other side ran: A {idle_rate['A']:.3f}, B {idle_rate['B']:.3f} s/s")
    for name in args.scenarios:
        ops = bench.SCENARIOS[name].ops_per_request
        line, medians = f"{name:<20}", {}
        for side in ("A", "B"):
            mine = [r for s, n, r in runs if s == side and n == name]
            if not mine:
                line += f"  {side}: -"
                continue
            cpu = statistics.median(per_op(r, ops) for r in mine)
            net = statistics.median(
                per_op(r, ops) - idle_rate[side] * 1e6 / max(r["ops_per_s"], 1e-9) for r in mine
            )
            rate = statistics.median(float(r["ops_per_s"]) for r in mine)
            p99 = statistics.median(float(r["p99_ms"]) for r in mine)
            medians[side] = (cpu, net)
            line += (
                f"  {side}: {cpu:6.1f} us/op ({net:6.1f} net) {rate:8,.0f} ops/s p99 {p99:6.0f} ms"
            )
        if len(medians) == 2:
            line += f"  B/A {medians['B'][0] / medians['A'][0]:.2f}x"
            line += f" ({medians['B'][1] / medians['A'][1]:.2f}x net)"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the old one)")
    parser.add_argument("--b", required=True, type=Path, help="checkout B (the new one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--system", default="n3", choices=list(SYSTEM_SHAPES))
    parser.add_argument("--scenarios", nargs="+", default=["increment_uniform", "batch_uniform"])
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    args = parser.parse_args()
    # Before the chdir below: a relative checkout (`--b .`) resolved after it named the empty
    # working directory, and its nodes silently ran whatever the venv's editable install holds.
    args.a, args.b = args.a.resolve(), args.b.resolve()
    timing = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    wrk_args = bench.parse_args(["--scenarios", *args.scenarios, *timing])
    workdir = Path(tempfile.mkdtemp(prefix="counters-ab-"))
    os.chdir(workdir)  # `python -m node` must not find a checkout in the working directory
    runs: list[tuple[str, str, dict[str, Any]]] = []  # (side, scenario, bench.measure's)
    idle: dict[str, list[float]] = {"A": [], "B": []}  # CPU s/s of a side while the other ran
    try:
        with (
            system_from(args.a, "a", args.system, workdir) as (procs_a, urls_a),
            system_from(args.b, "b", args.system, workdir) as (procs_b, urls_b),
        ):
            bench.preload(urls_a)
            bench.preload(urls_b)
            sides = [("A", procs_a, urls_a), ("B", procs_b, urls_b)]
            for round_no in range(args.rounds):
                for name in args.scenarios:
                    scenario = bench.SCENARIOS[name]
                    for index, (label, processes, urls) in enumerate(sides):
                        other = sides[1 - index][1]
                        idle_before, started = other.cpu_seconds(), time.monotonic()
                        r = bench.measure(label, scenario, urls, wrk_args, processes)
                        idle[sides[1 - index][0]].append(
                            (other.cpu_seconds() - idle_before) / (time.monotonic() - started)
                        )
                        if "failed" in r:
                            print(f"round {round_no + 1} {label} {name}: {r['failed']}")
                            continue
                        runs.append((label, name, r))
                        print(
                            f"round {round_no + 1} {label} {name:<20} "
                            f"{per_op(r, scenario.ops_per_request):8.1f} CPU us/op "
                            f"{r['ops_per_s']:10,.0f} ops/s  p99 {r['p99_ms']:7.1f} ms  "
                            f"non2xx {r['non2xx']} load {r['load_avg_1m']:.1f}",
                            flush=True,
                        )
                        processes.check_alive()
                sides.reverse()  # A B, then B A: a load that grows through a round is shared
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, runs, idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Application-level increments per second through counters-client's add() (issue 15).

One asyncio process calls add() as fast as the client lets it, on counter names drawn from a
Zipf law (s = 1.1 over 100,000 names by default, drawn before the clock starts), into a local
3-node cluster (N=3, W=2, R=2) or the baseline (loadtest/baseline_service.py: aiohttp and one
Redis, no replication); the client sums same-counter adds and sends keyed batches to each
counter's coordinator (to the one baseline process, unrouted). Reported per system:
acknowledged add() calls per second, the ops the nodes applied per second (an op carries the
sum of the adds of one counter within a flush), the median and p99 time from add() to
acknowledged (every 64th add is timed), and CPU us per acknowledged add (nodes, Redis and
this process).

    .venv/bin/python loadtest/bench_client.py --duration 10
    .venv/bin/python loadtest/bench_client.py --systems n3 --flush-ms 20 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_systems import Processes, running  # noqa: E402
from counters_client import AsyncClient, BufferFull, CountersError  # noqa: E402
from zipf import cumulative, rank  # noqa: E402

NAMESPACE = "benchclient"
SCENARIO = "client_add_zipf"  # its name among bench.py's scenarios
GOAL_ADDS_PER_S = 500_000
GOAL_MEDIAN_MS = 50.0


def draw_names(count: int, s: float, draws: int, seed: int) -> list[str]:
    table = cumulative(count, s)
    uniform = random.Random(seed).random
    return [f"c{rank(table, uniform())}" for _ in range(draws)]


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Driver:
    """add() at an offered rate (0: as fast as the client takes them), in slices of at most
    2,000 between which the flushes run; adds refused with BufferFull are counted, not
    retried (an open loop: a slow cluster does not slow the offered load)."""

    def __init__(self, client: AsyncClient, names: list[str], rate: float) -> None:
        self.client, self.names, self.rate = client, names, rate
        self.next = 0
        self.shed = 0

    async def run(self, seconds: float) -> None:
        add, names, count = self.client.add, self.names, len(self.names)
        loop = asyncio.get_running_loop()
        started = loop.time()
        until, offered = started + seconds, 0
        while (now := loop.time()) < until:
            due = 2000 if not self.rate else min(2000, int((now - started) * self.rate) - offered)
            for _ in range(due):
                try:
                    add(NAMESPACE, names[self.next])
                except BufferFull:
                    self.shed += 1
                self.next = self.next + 1 if self.next + 1 < count else 0
            offered += max(due, 0)
            await asyncio.sleep(0 if not self.rate or due >= 2000 else 0.001)


async def measure(
    urls: list[str], routed: bool, names: list[str], args: argparse.Namespace, processes: Processes
) -> dict[str, Any]:
    options: dict[str, Any] = {"flush_interval_ms": args.flush_ms, "route": routed}
    async with AsyncClient(urls, max_buffer=args.max_buffer, **options) as client:
        driver = Driver(client, names, args.rate)
        await driver.run(args.warmup)
        client.latencies.clear()
        shed = driver.shed
        acked, ops, cpu = client.stats.acknowledged, client.stats.ops_sent, processes.cpu_seconds()
        own_cpu, started = _cpu_self(), time.perf_counter()
        await driver.run(args.duration)
        elapsed = time.perf_counter() - started
        acked = client.stats.acknowledged - acked
        ops = client.stats.ops_sent - ops
        cpu = processes.cpu_seconds() - cpu + _cpu_self() - own_cpu
        latencies = sorted(client.latencies)
        try:
            await client.flush()
        except CountersError:  # counted in stats.failed: the row says how many adds failed
            pass
        stats = client.stats
    p = (
        (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000)
        if latencies
        else (lambda q: float("nan"))
    )
    return {
        "adds_per_s": acked / elapsed,
        "ops_per_s": ops / elapsed,
        "adds_per_op": acked / ops if ops else 0.0,
        "median_ms": p(0.5),
        "p99_ms": p(0.99),
        "cpu_us_per_add": cpu / acked * 1e6 if acked else float("nan"),
        "failed_adds": stats.failed,  # not "failed": bench.py marks a failed run so
        "shed": driver.shed - shed,
        "samples": len(latencies),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["n3", "baseline"])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--names", type=int, default=100_000, help="distinct counter names")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument(
        "--flush-ms", type=float, default=10.0, help="the client's flush_interval_ms"
    )
    parser.add_argument("--max-buffer", type=int, default=200_000)
    parser.add_argument(
        "--rate", type=float, default=0, help="adds/s offered (0: as fast as accepted)"
    )
    parser.add_argument("--draws", type=int, default=2_000_000, help="names drawn ahead")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--target", default="", help="URL,... of a running cluster instead")
    return parser.parse_args(argv)


def measure_system(
    system: str, urls: list[str], names: list[str], args: argparse.Namespace, processes: Processes
) -> dict[str, Any]:
    """One system's row: routed by topology, except the baseline (it has no topology)."""
    return asyncio.run(measure(urls, system != "baseline", names, args, processes))


def report_lines(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    """The rows as a table, each system's ratio to the baseline, and the goal's verdict."""
    offered = "as fast as accepted" if not args.rate else f"{args.rate:,.0f}/s"
    lines = [
        f"add() with Zipf s={args.zipf_s} over {args.names:,} names, flush every "
        f"{args.flush_ms:g} ms, {args.duration:g} s measured after {args.warmup:g} s, "
        f"offered {offered}",
        "| system | adds/s acknowledged | ops/s applied | adds per op | median add->ack "
        "| p99 | CPU us/add | failed | shed (BufferFull) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system, row in rows:
        lines.append(
            f"| {system} | {row['adds_per_s']:,.0f} | {row['ops_per_s']:,.0f} | "
            f"{row['adds_per_op']:.1f} | {row['median_ms']:.1f} ms | {row['p99_ms']:.1f} ms | "
            f"{row['cpu_us_per_add']:.2f} | {row['failed_adds']} | {row['shed']:,} |"
        )
    baseline = dict(rows).get("baseline")
    for system, row in rows:
        if system == "baseline":
            continue
        met = row["adds_per_s"] >= GOAL_ADDS_PER_S and row["median_ms"] < GOAL_MEDIAN_MS
        versus = ""
        if baseline is not None and baseline["adds_per_s"]:
            versus = f", {row['adds_per_s'] / baseline['adds_per_s']:.2f}x the baseline's adds/s"
        lines.append(
            f"goal ({GOAL_ADDS_PER_S:,}/s, median < {GOAL_MEDIAN_MS:g} ms) for {system}: "
            f"{'met' if met else 'MISS'}{versus}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = draw_names(args.names, args.zipf_s, args.draws, args.seed)
    targets = [url for url in args.target.split(",") if url]
    systems = ["target"] if targets else args.systems
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-client-") as workdir:
        processes = Processes(Path(workdir))
        for system in systems:
            with running(system, processes, targets) as urls:
                rows.append((system, measure_system(system, urls, names, args, processes)))
    print("\n".join(report_lines(rows, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scale benchmark (issue 13): a node holding a million counters, filled, stopped, restarted.

Run from the repo root (nothing but the venv is needed; the node keeps its counters in the
embedded SQLite durable replica of a fresh data dir):

    .venv/bin/python loadtest/bench_scale.py --counters 1000000 --json scale.json

One node, N=1 (or `--nodes 3`, N=3 W=2 R=2, where gossip and anti-entropy have peers to
talk to), started on free 127.0.0.1 ports (bench_systems.py). It measures, in this order:
  - creation: N new counters in batches of 1,000 ops, from `--clients` concurrent clients;
  - increments: the same batches again, now of existing counters;
  - resident memory per counter: (RSS after the fill - RSS of the empty node) / N, per node;
  - idle CPU: the nodes' CPU time over `--idle-s` seconds with no load, in % of one core,
    after the first restart once the work a start leaves for after ready is done (weighing
    the loaded counters, restoring the windows: /metrics says when), which is reported
    apart in seconds and CPU seconds;
  - restarts, `--restarts` times: SIGTERM to every node (the first one right after the last
    acknowledged increment), the time to exit, a start on the same data dir and the time to
    /readyz 200; then every acknowledged increment is checked: a sample after each restart,
    and every counter's value (and their total) after the last one.
Figures are medians where a phase is repeated. Every wait is bounded (`--max-s` for the
whole run) and every process started here is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from bench import Terminated, _raise_on_sigterm
from bench_realtime import realtime_phase
from bench_realtime import report_lines as realtime_lines
from bench_report import _target_line
from bench_systems import Processes, _http_ok, start_cluster

NAMESPACE = "scale"
BATCH = 1_000  # ops per request: the node's most per batch
DEFAULT_QUOTA = 1_000_000  # the node's default --max-counters-per-tenant
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # after the load, before idle CPU is measured: the last flushes finish

# Goals of issue 13 (one node, N=1, a million counters).
GOAL_READY_S = 5.0
GOAL_EXIT_S = 5.0
GOAL_CREATE_RATIO = 0.8
GOAL_IDLE_CPU_PCT = 5.0
GOAL_RSS_BYTES = 300.0


def name_of(index: int) -> str:
    return f"c{index:07d}"


def fill_delta(index: int) -> int:
    """The first increment of each counter differs, so a value shows which counter it is."""
    return 1 + index % 5


def _body(indexes: Sequence[int], delta: Callable[[int], int] | None) -> bytes:
    """A batch body, written directly: the client must not be what the run measures."""
    if delta is None:
        ops = ",".join(f'{{"op":"get","name":"{name_of(i)}"}}' for i in indexes)
    else:
        ops = ",".join(
            f'{{"op":"increment","name":"{name_of(i)}","delta":{delta(i)}}}' for i in indexes
        )
    return f'{{"ops":[{ops}]}}'.encode()


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"--max-s reached during {what}")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> list[dict[str, Any]]:
    async with session.post(
        f"{url}/v1/namespaces/{NAMESPACE}/batch",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"batch answered {response.status}: {text[:300]}")
    results: list[dict[str, Any]] = json.loads(text)["results"]
    bad = [r for r in results if "value" not in r]
    if bad:
        raise RuntimeError(f"{len(bad)} ops of a batch failed, first: {bad[0]}")
    return results


async def run_batches(
    urls: list[str],
    chunks: list[Sequence[int]],
    delta: Callable[[int], int] | None,
    clients: int,
    deadline: Deadline,
    what: str,
) -> dict[str, int]:
    """One batch per chunk of counter indexes (increments by `delta`, or gets), sent from
    `clients` concurrent clients spread over the nodes; returns the values answered."""
    values: dict[str, int] = {}
    pending = iter(enumerate(chunks))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def client(session: aiohttp.ClientSession) -> None:
        for number, indexes in pending:
            deadline.check(what)
            results = await _post(session, urls[number % len(urls)], _body(indexes, delta))
            for result in results:
                values[result["name"]] = result["value"]

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return values


def chunked(indexes: Sequence[int]) -> list[Sequence[int]]:
    return [indexes[start : start + BATCH] for start in range(0, len(indexes), BATCH)]


def timed_load(
    processes: Processes,
    urls: list[str],
    args: argparse.Namespace,
    deadline: Deadline,
    delta: Callable[[int], int],
    what: str,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Increment every counter once by `delta`; the figures, and the values acknowledged."""
    cpu_before, began = processes.cpu_seconds(), time.monotonic()
    chunks = chunked(range(args.counters))
    values = asyncio.run(run_batches(urls, chunks, delta, args.clients, deadline, what))
    seconds = time.monotonic() - began
    cpu_s = processes.cpu_seconds() - cpu_before
    figures = {
        "seconds": seconds,
        "ops_per_s": args.counters / seconds,
        "cpu_us_per_op": cpu_s * 1e6 / args.counters,
    }
    return figures, values


def rss_bytes(processes: Processes, name: str) -> int:
    pid = processes.children[name].pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {name}")


def stop_nodes(processes: Processes, names: list[str], timeout_s: float) -> float:
    """SIGTERM every node at once; seconds until the last one exited (killed past
    `timeout_s`, which fails the run: a kill may lose what was acknowledged)."""
    began = time.monotonic()
    for name in names:
        processes.children[name].send_signal(signal.SIGTERM)
    for name in names:
        child = processes.children[name]
        try:
            code = child.wait(max(0.1, began + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise RuntimeError(f"{name} still running {timeout_s:.0f} s after SIGTERM") from None
        if code != 0:
            raise RuntimeError(f"{name} exited with {code}:\n{processes.tail(name)}")
    return time.monotonic() - began


def start_nodes(processes: Processes, names: list[str], urls: list[str]) -> tuple[float, float]:
    """Start the nodes again on their data dirs; seconds until every /readyz answers 200,
    and the CPU seconds the nodes used until then (on a busy machine the wall time
    stretches, the CPU time hardly moves)."""
    began = time.monotonic()
    for name in names:
        processes.restart(name)
    pending = list(urls)
    while pending:
        processes.check_alive()
        pending = [url for url in pending if not _http_ok(f"{url}/readyz")]
        if pending and time.monotonic() - began > READY_TIMEOUT_S:
            raise RuntimeError(f"not ready {READY_TIMEOUT_S:.0f} s after a restart: {pending}")
        if pending:
            time.sleep(0.05)
    return time.monotonic() - began, processes.cpu_seconds()


# The work a start leaves for after ready, as /metrics counts it: shards whose loaded
# counters wait for their digest weights, shards whose windows wait for the window file.
START_WORK_GAUGES = ("counters_store_unweighed_shards", "counters_realtime_restoring_shards")


def _start_work_left(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    left = 0.0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in START_WORK_GAUGES:
            left += float(value)
    return left


def finish_start_work(processes: Processes, urls: list[str]) -> tuple[float, float]:
    """Wait until every node has done what a start leaves for after ready (weighing the
    loaded counters, restoring the windows); the seconds that took, and the nodes' CPU
    seconds meanwhile. Idle CPU is measured after it: it is a start's cost, once."""
    began, cpu = time.monotonic(), processes.cpu_seconds()
    while any(_start_work_left(url) for url in urls):
        processes.check_alive()
        if time.monotonic() - began > READY_TIMEOUT_S:
            raise RuntimeError(f"start work not done {READY_TIMEOUT_S:.0f} s after ready")
        time.sleep(0.2)
    return time.monotonic() - began, processes.cpu_seconds() - cpu


def check_values(
    urls: list[str],
    acknowledged: dict[str, int],
    indexes: Sequence[int],
    args: argparse.Namespace,
    deadline: Deadline,
) -> dict[str, Any]:
    """Read these counters back in batches of gets: which differ from what was acknowledged
    (every counter was acknowledged, so each must read exactly its acknowledged value)."""
    found = asyncio.run(
        run_batches(urls, chunked(indexes), None, args.clients, deadline, "the check")
    )
    names = [name_of(i) for i in indexes]
    wrong = [(n, found.get(n), acknowledged[n]) for n in names if found.get(n) != acknowledged[n]]
    return {
        "checked": len(names),
        "wrong": len(wrong),
        "first_wrong": wrong[:5],
        "total_read": sum(found.get(n, 0) for n in names),
        "total_acknowledged": sum(acknowledged[n] for n in names),
    }


def idle_cpu_percent(processes: Processes, seconds: float) -> float:
    """The nodes' CPU time over `seconds` with no load, in % of one core (all nodes)."""
    before, began = processes.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (processes.cpu_seconds() - before) / (time.monotonic() - began)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run(processes: Processes, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Every phase in order; `figures` fills as they finish, so a failed run keeps them."""
    deadline = Deadline(args.max_s)
    replicas = min(args.nodes, 3)
    quorum = 1 if replicas == 1 else 2
    extra = ("--max-counters-per-tenant", str(max(DEFAULT_QUOTA, args.counters)))
    if args.no_windows:  # issue 14: the increments' CPU without windowed changes
        extra += ("--realtime-windows", "false")
    system = f"n{args.nodes}"
    print(f"== {system}: starting", file=sys.stderr, flush=True)
    urls = start_cluster(processes, system, args.nodes, replicas, quorum, extra)
    names = list(processes.children)
    time.sleep(1.0)  # the first gossip rounds and flushes of an empty node
    empty_rss = {name: rss_bytes(processes, name) for name in names}

    print(f"   creating {args.counters:,} counters ...", file=sys.stderr, flush=True)
    figures["create"], _ = timed_load(processes, urls, args, deadline, fill_delta, "creation")
    print("   incrementing them ...", file=sys.stderr, flush=True)
    figures["increment"], acknowledged = timed_load(
        processes, urls, args, deadline, lambda i: 1, "increments"
    )
    figures["create_vs_increment"] = (
        figures["create"]["ops_per_s"] / figures["increment"]["ops_per_s"]
    )
    figures["rss_bytes_per_counter"] = {
        name: (rss_bytes(processes, name) - empty_rss[name]) / args.counters for name in names
    }
    figures["rss_bytes"] = {name: rss_bytes(processes, name) for name in names}
    if args.realtime:
        print("   real-time queries ...", file=sys.stderr, flush=True)
        figures["realtime"] = realtime_phase(
            urls, acknowledged, args.realtime_queries, processes.cpu_seconds
        )

    # The first SIGTERM comes right after the last acknowledged increment: the last flush
    # has to carry whatever the write-behind had not written yet.
    exits: list[float] = []
    readies: list[float] = []
    ready_cpus: list[float] = []
    samples: list[dict[str, Any]] = []
    rng = random.Random(13)
    for attempt in range(args.restarts):
        deadline.check("the restarts")
        print(f"   restart {attempt + 1}/{args.restarts} ...", file=sys.stderr, flush=True)
        exits.append(stop_nodes(processes, names, args.exit_timeout_s))
        ready_s, ready_cpu_s = start_nodes(processes, names, urls)
        readies.append(ready_s)
        ready_cpus.append(ready_cpu_s)
        figures["exit_s"], figures["ready_s"], figures["ready_cpu_s"] = exits, readies, ready_cpus
        figures.setdefault("start_work", []).append(finish_start_work(processes, urls))
        sample = sorted(rng.sample(range(args.counters), min(args.sample, args.counters)))
        samples.append(check_values(urls, acknowledged, sample, args, deadline))
        figures["sample_checks"] = samples
        if attempt == 0:
            # The same counters loaded from the durable replica rather than made by requests.
            figures["rss_bytes_per_counter_restarted"] = {
                name: (rss_bytes(processes, name) - empty_rss[name]) / args.counters
                for name in names
            }
            # Idle after a restart, once the start's own work is done (measured above):
            # the state a node holds for most of its life.
            time.sleep(SETTLE_S)
            print(f"   idle for {args.idle_s:g} s ...", file=sys.stderr, flush=True)
            figures["idle_cpu_pct"] = idle_cpu_percent(processes, args.idle_s)
    if not args.restarts:  # the fill and the real-time phase only (issue 14's figures)
        return
    print("   reading every counter back ...", file=sys.stderr, flush=True)
    figures["full_check"] = check_values(urls, acknowledged, range(args.counters), args, deadline)


def verdicts(figures: dict[str, Any]) -> list[str]:
    lines = []
    # The first stop comes right after the load, with the most left to flush: the worst
    # stop is the one judged, and the median start.
    ready, exits = _median(figures.get("ready_s", [])), figures.get("exit_s", [])
    exit_s = max(exits) if exits else None
    for label, value, goal, which in (
        ("restart to ready", ready, GOAL_READY_S, "median"),
        ("SIGTERM to exit", exit_s, GOAL_EXIT_S, "worst"),
    ):
        ok = None if value is None else value <= goal
        shown = "-" if value is None else f"{value:.2f} s"
        lines.append(_target_line(label, ok, f"{shown} {which} (want <= {goal:g} s)"))
    cpu = _median(figures.get("ready_cpu_s", []))
    if cpu is not None:  # the wall time on a machine to itself would be about this
        lines.append(f"         (CPU until ready: {cpu:.2f} s median)")
    work = figures.get("start_work")
    if work:
        seconds, cpu = statistics.median(s for s, _ in work), statistics.median(c for _, c in work)
        lines.append(
            f"         (after ready, weighing and restoring windows: {seconds:.2f} s, "
            f"{cpu:.2f} CPU s median)"
        )
    ratio = figures.get("create_vs_increment")
    ok = None if ratio is None else ratio >= GOAL_CREATE_RATIO
    shown = "-" if ratio is None else f"{ratio:.2f}x"
    lines.append(
        _target_line("creation vs increments", ok, f"{shown} (want >= {GOAL_CREATE_RATIO}x)")
    )
    rss = figures.get("rss_bytes_per_counter")
    worst = None if not rss else max(rss.values())
    ok = None if worst is None else worst <= GOAL_RSS_BYTES
    shown = "-" if worst is None else f"{worst:,.0f} B"
    lines.append(_target_line("RSS per counter", ok, f"{shown} (want <= {GOAL_RSS_BYTES:.0f} B)"))
    idle = figures.get("idle_cpu_pct")
    ok = None if idle is None else idle < GOAL_IDLE_CPU_PCT
    shown = "-" if idle is None else f"{idle:.1f}%"
    lines.append(_target_line("idle CPU", ok, f"{shown} of a core (want < {GOAL_IDLE_CPU_PCT:g}%)"))
    checks = [
        *figures.get("sample_checks", []),
        *([figures["full_check"]] if "full_check" in figures else []),
    ]
    wrong = sum(check["wrong"] for check in checks)
    ok = None if not checks else wrong == 0 and "full_check" in figures
    read = sum(check["checked"] for check in checks)
    detail = f"{wrong} of {read:,} reads differ from the acknowledged values"
    lines.append(_target_line("nothing acknowledged lost", ok, detail))
    return lines


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"{args.nodes} node(s), {args.counters:,} counters, batches of {BATCH}, "
        f"{args.clients} clients; {os.cpu_count()} CPUs"
    ]
    for phase in ("create", "increment"):
        if phase in figures:
            f = figures[phase]
            lines.append(
                f"  {phase:<10} {f['ops_per_s']:>10,.0f} ops/s  "
                f"{f['cpu_us_per_op']:>6.1f} CPU us/op  ({f['seconds']:.1f} s)"
            )
    for name, per in figures.get("rss_bytes_per_counter", {}).items():
        lines.append(
            f"  RSS {name}: {figures['rss_bytes'][name] / 2**20:,.0f} MiB, {per:,.0f} B per counter"
        )
        restarted = figures.get("rss_bytes_per_counter_restarted", {}).get(name)
        if restarted is not None:
            lines.append(f"  RSS {name} after a restart: {restarted:,.0f} B per counter")
    labels = (
        ("exit_s", "SIGTERM to exit"),
        ("ready_s", "start to ready"),
        ("ready_cpu_s", "CPU until ready"),
    )
    for key, label in labels:
        if figures.get(key):
            runs = ", ".join(f"{v:.2f}" for v in figures[key])
            lines.append(f"  {label}: {runs} s")
    if "full_check" in figures:
        check = figures["full_check"]
        lines.append(
            f"  read back: total {check['total_read']:,}, "
            f"acknowledged {check['total_acknowledged']:,}"
        )
    if "realtime" in figures:
        lines += ["real-time queries (issue 14):", *realtime_lines(figures["realtime"])]
    lines += ["", "targets (issue 13):", *verdicts(figures)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=1_000_000, help="counters to create")
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 3), help="1 (N=1) or 3 (N=3)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument(
        "--restarts", type=int, default=3, help="SIGTERM and start, this often (0: none, no check)"
    )
    parser.add_argument("--sample", type=int, default=2_000, help="counters read after a restart")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--exit-timeout-s", type=float, default=120.0, help="kill (and fail) a node past this"
    )
    parser.add_argument("--max-s", type=float, default=1_200.0, help="bound of the whole run")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--keep-dir", action="store_true", help="keep logs and data dirs")
    parser.add_argument("--realtime", action="store_true", help="time aggregates and top-k")
    parser.add_argument("--realtime-queries", type=int, default=100, help="of each kind")
    parser.add_argument("--no-windows", action="store_true", help="nodes keep no windows")
    args = parser.parse_args(argv)
    if args.counters < 1 or args.clients < 1 or args.restarts < 0 or args.idle_s <= 0:
        parser.error("need --counters, --clients >= 1, --restarts >= 0 and a positive --idle-s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="counters-scale-"))
    processes = Processes(workdir)
    figures: dict[str, Any] = {}
    failed = ""
    try:
        run(processes, args, figures)
    except (KeyboardInterrupt, Terminated):
        failed = "interrupted: the figures below are partial"
    except (RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as error:
        failed = f"failed: {type(error).__name__}: {error}"
    finally:
        processes.stop_all()
        if args.keep_dir:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(figures, args))
    if failed:
        print(failed)
    if args.json:
        document = {"command": sys.argv, "config": vars(args), "figures": figures, "failed": failed}
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

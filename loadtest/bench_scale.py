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
The load it sends lives in scale_load.py, what it does to the node processes in scale_nodes.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench import Terminated, _raise_on_sigterm
from bench_realtime import realtime_phase
from bench_realtime import report_lines as realtime_lines
from bench_report import _target_line
from bench_systems import Processes, start_cluster
from scale_load import BATCH, Deadline, check_values, fill_delta, timed_load
from scale_nodes import finish_start_work, idle_cpu_percent, rss_bytes, start_nodes, stop_nodes

DEFAULT_QUOTA = 1_000_000  # the node's default --max-counters-per-tenant
SETTLE_S = 3.0  # after the load, before idle CPU is measured: the last flushes finish

# Goals of issue 13 (one node, N=1, a million counters).
GOAL_READY_S = 5.0
GOAL_EXIT_S = 5.0
GOAL_CREATE_RATIO = 0.8
GOAL_IDLE_CPU_PCT = 5.0
GOAL_RSS_BYTES = 300.0


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

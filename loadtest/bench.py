"""HTTP benchmark: a 3-node Counters cluster against a Redis-backed baseline and a 1-node cluster.

Run from the repo root (wrk and redis-server must be on PATH):

    .venv/bin/python loadtest/bench.py --duration 10 --json bench.json
    .venv/bin/python loadtest/bench.py --duration 8 --rounds 3    # medians of three rounds

Each system is started on free 127.0.0.1 ports (see bench_systems.py), measured with wrk (a
warm-up, then a fixed run per scenario) and stopped before the next one starts, so systems never
share the CPU. Every process started here is stopped on exit, Ctrl-C and SIGTERM included.
The scenario client_add_zipf is not wrk's: this process calls the Python client's add() as
fast as it takes them, on Zipf keys (bench_client.py, issue 15), and its figures are
printed in a table of their own beside the same systems' wrk figures (bench_report.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_client
from bench_report import ratios, report
from bench_rounds import median_ratios, medians
from bench_systems import SYSTEM_ABOUT, SYSTEMS, Processes, running
from counters_client import CountersError

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
NAMESPACE = "bench"
KEY_COUNT = 10_000
BATCH_SIZE = 100
PRELOAD_BATCH = 1_000  # the node's most ops per batch
WRK_SOCKET_TIMEOUT = "5s"  # above the node's 2 s request timeout, so 504s are seen as such


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str  # file in loadtest/wrk/
    keys: str  # BENCH_KEYS: uniform, zipf or hot
    ops_per_request: int
    about: str
    keyed: bool = False  # BENCH_KEYED: each request under a fresh Idempotency-Key
    # wrk connections unless --connections says otherwise: issue 13's goals are set at 63
    # for single ops and 15 for batches
    connections: int = 63


BATCH: dict[str, Any] = {"connections": 15}

SCENARIOS = {
    s.name: s
    for s in (
        Scenario("increment_uniform", "increment.lua", "uniform", 1, "1 increment, uniform keys"),
        Scenario("increment_zipf", "increment.lua", "zipf", 1, "1 increment, Zipf s=1.1 keys"),
        Scenario("read_uniform", "read.lua", "uniform", 1, "1 read, uniform keys"),
        Scenario("read_zipf", "read.lua", "zipf", 1, "1 read, Zipf s=1.1 keys"),
        Scenario(
            "batch_uniform", "batch.lua", "uniform", BATCH_SIZE, "100 increments, uniform", **BATCH
        ),
        Scenario("batch_zipf", "batch.lua", "zipf", BATCH_SIZE, "100 increments, Zipf", **BATCH),
        Scenario("hot_key", "increment.lua", "hot", 1, "1 increment, all on one counter"),
        Scenario(
            "keyed_batch_uniform",
            "batch.lua",
            "uniform",
            BATCH_SIZE,
            "batch_uniform, each under a fresh Idempotency-Key",
            keyed=True,
            **BATCH,
        ),
    )
}


# -- load -----------------------------------------------------------------------------------


def preload(urls: list[str]) -> None:
    """Give every counter a value, so reads measure real reads, not misses."""
    for start in range(0, KEY_COUNT, PRELOAD_BATCH):
        ops = [
            {"op": "increment", "name": f"k{i}", "delta": 1}
            for i in range(start, min(start + PRELOAD_BATCH, KEY_COUNT))
        ]
        url = urls[(start // PRELOAD_BATCH) % len(urls)]
        request = urllib.request.Request(
            f"{url}/v1/namespaces/{NAMESPACE}/batch",
            data=json.dumps({"ops": ops}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 200:
                raise RuntimeError(f"preload batch answered {response.status}")


def run_wrk(
    scenario: Scenario, urls: list[str], seconds: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One wrk run; its done() hook prints a WRK_JSON line, returned here as a dict."""
    hosts = [url.removeprefix("http://").rstrip("/") for url in urls]
    env = dict(os.environ)
    env.update(
        BENCH_HOSTS=",".join(hosts),
        BENCH_KEYS=scenario.keys,
        BENCH_KEY_COUNT=str(KEY_COUNT),
        BENCH_BATCH_SIZE=str(BATCH_SIZE),
        BENCH_NAMESPACE=NAMESPACE,
        BENCH_STATUS="1" if args.count_status else "0",
        BENCH_KEYED="1" if scenario.keyed else "0",
    )
    argv = ["wrk", "-t", str(args.threads), "-c", str(connections(scenario, args))]
    argv += ["-d", f"{seconds:g}s", "--timeout", WRK_SOCKET_TIMEOUT]
    argv += ["-s", str(WRK_DIR / scenario.script), urls[0]]
    # wrk stops itself after -d; the timeout only guards against a wedged wrk.
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 30)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stderr.strip()}")


def connections(scenario: Scenario, args: argparse.Namespace) -> int:
    """wrk connections for a scenario: --connections, else the scenario's own, rounded down
    to a multiple of the threads (wrk opens connections // threads per thread)."""
    wanted = args.connections or scenario.connections
    return max(args.threads, wanted - wanted % args.threads)


def measure(
    system: str,
    scenario: Scenario,
    urls: list[str],
    args: argparse.Namespace,
    processes: Processes,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system,
        "scenario": scenario.name,
        "connections": connections(scenario, args),
    }
    try:
        if args.warmup > 0:
            run_wrk(scenario, urls, args.warmup, args)
        result["load_avg_1m"] = os.getloadavg()[0]
        cpu_before = processes.cpu_seconds()
        raw = run_wrk(scenario, urls, args.duration, args)
        cpu_s = processes.cpu_seconds() - cpu_before
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        result["failed"] = str(error)
        return result
    requests_per_s = raw["requests"] / raw["duration_s"] if raw["duration_s"] else 0.0
    result.update(
        requests_per_s=requests_per_s,
        ops_per_s=requests_per_s * scenario.ops_per_request,
        p50_ms=raw["latency_ms"]["p50"],
        p99_ms=raw["latency_ms"]["p99"],
        errors=raw["errors"],
        non2xx=raw["non2xx"],
        # None against --target: those processes are not ours to read
        cpu_us_per_request=cpu_s * 1e6 / raw["requests"]
        if raw["requests"] and processes.children
        else None,
        wrk=raw,
    )
    return result


def client_options(args: argparse.Namespace) -> argparse.Namespace:
    """bench_client.py's defaults (Zipf s = 1.1 over 100,000 names, flush every 10 ms,
    as fast as accepted), timed like the wrk runs."""
    return bench_client.parse_args(["--duration", str(args.duration), "--warmup", str(args.warmup)])


@functools.cache
def client_names(count: int, s: float, draws: int, seed: int) -> list[str]:
    return bench_client.draw_names(count, s, draws, seed)


def measure_client(
    system: str, urls: list[str], args: argparse.Namespace, processes: Processes
) -> dict[str, Any]:
    """The client scenario on one system: add() through counters_client (bench_client.py)."""
    result: dict[str, Any] = {"system": system, "scenario": bench_client.SCENARIO}
    options = client_options(args)
    names = client_names(options.names, options.zipf_s, options.draws, options.seed)
    try:
        result.update(bench_client.measure_system(system, urls, names, options, processes))
    except (CountersError, OSError) as error:
        result["failed"] = f"{type(error).__name__}: {error}"
    return result


def log_problems(workdir: Path, system: str) -> dict[str, dict[str, Any]]:
    """Warning, error and traceback lines each node of a system logged, shutdown included."""
    problems: dict[str, dict[str, Any]] = {}
    for path in sorted(workdir.glob(f"{system}-node-*.log")):
        lines = path.read_text(errors="replace").splitlines()
        levels = ('"level": "warning"', '"level": "error"', '"level": "critical"')
        bad = [line for line in lines if any(level in line for level in levels)]
        bad += [line for line in lines if line.startswith("Traceback")]
        node = path.stem.removeprefix(f"{system}-node-")
        problems[node] = {"count": len(bad), "first": bad[:5]}
    return problems


def bench_system(
    system: str, processes: Processes, args: argparse.Namespace, results: list[dict[str, Any]]
) -> None:
    """Appends one result per scenario as it comes, so an interrupted run keeps what it has;
    a system that fails to start or dies marks its remaining scenarios failed."""
    print(f"== {system}: {SYSTEM_ABOUT[system]}", file=sys.stderr, flush=True)
    try:
        with running(system, processes, args.target) as urls:
            preload(urls)
            for name in args.scenarios:
                print(f"   {name} ...", file=sys.stderr, flush=True)
                if name == bench_client.SCENARIO:
                    results.append(measure_client(system, urls, args, processes))
                else:
                    results.append(measure(system, SCENARIOS[name], urls, args, processes))
                processes.check_alive()
    except (RuntimeError, OSError) as error:
        print(f"   {system} failed: {error}", file=sys.stderr, flush=True)
        done = {r["scenario"] for r in results if r["system"] == system}
        results += [
            {"system": system, "scenario": name, "failed": f"{system}: {error}"}
            for name in args.scenarios
            if name not in done
        ]


def write_json(
    path: str, args: argparse.Namespace, document: dict[str, Any], problems: dict[str, Any]
) -> None:
    config = {k: v for k, v in vars(args).items() if k != "json"}
    machine = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    systems = {s: SYSTEM_ABOUT[s] for s in args.systems}
    header = {"command": sys.argv, "config": config, "machine": machine, "systems": systems}
    body = {**header, **document, "node_log_problems": problems}
    Path(path).write_text(json.dumps(body, indent=2) + "\n")


# -- main -----------------------------------------------------------------------------------


def _names(values: list[str]) -> list[str]:
    return [name for value in values for name in value.split(",") if name]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run")
    parser.add_argument(
        "--connections",
        type=int,
        default=0,
        help="wrk connections, total (rounded down); default 63 for single ops, 15 for batches",
    )
    parser.add_argument("--threads", type=int, default=3, help="wrk threads, rotated over hosts")
    parser.add_argument(
        "--scenarios", nargs="+", default=[*SCENARIOS, bench_client.SCENARIO], help="default: all"
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        default=list(SYSTEMS),
        help="n3 baseline n1 by default; also n3redis",
    )
    parser.add_argument("--target", default="", help="URL,...: measure these instead of n3")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument(
        "--no-status", dest="count_status", action="store_false", help="skip wrk's response hook"
    )
    parser.add_argument("--keep-dir", action="store_true", help="keep logs and data dirs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times over; report medians, ratios within a round",
    )
    args = parser.parse_args(argv)
    args.scenarios, args.systems = _names(args.scenarios), _names(args.systems)
    args.target = [url.rstrip("/") for url in args.target.split(",") if url]
    if args.target:
        args.systems = ["target" if s == "n3" else s for s in args.systems]
    unknown = set(args.scenarios) - {*SCENARIOS, bench_client.SCENARIO}
    unknown |= set(args.systems) - set(SYSTEM_ABOUT)
    if unknown:
        parser.error(f"unknown scenario or system: {', '.join(sorted(unknown))}")
    if (args.connections and args.connections < args.threads) or args.duration <= 0:
        parser.error("need --connections >= --threads and a positive --duration")
    if args.rounds < 1:
        parser.error("need --rounds >= 1")
    return args


class Terminated(Exception):
    """SIGTERM arrived; raised so the run unwinds like Ctrl-C and stops its children."""


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not on PATH (apt-get install -y {tool})")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="counters-bench-"))
    processes = Processes(workdir)
    rounds: list[list[dict[str, Any]]] = []
    problems: dict[str, Any] = {}
    interrupted = False
    try:
        for number in range(1, args.rounds + 1):
            this_round: list[dict[str, Any]] = []
            rounds.append(this_round)
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", file=sys.stderr, flush=True)
            for system in args.systems:
                bench_system(system, processes, args, this_round)
                problems[system] = log_problems(workdir, system)
    except (KeyboardInterrupt, Terminated):
        interrupted = True
        print("interrupted: the results below are partial", file=sys.stderr)
    finally:
        processes.stop_all()
        if args.keep_dir:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    counters = "target" if args.target else "n3"
    by_round = [ratios(results, counters) for results in rounds]
    if len(rounds) == 1:  # every figure as measured, wrk's raw output included
        results, summary = rounds[0], by_round[0]
    else:
        results, summary = medians(rounds), median_ratios(by_round)
    print(
        f"wrk: {args.threads} threads, "
        f"{args.connections or 'per scenario (63 single ops, 15 batches)'} connections, "
        f"{args.duration:g} s runs after {args.warmup:g} s warm-up; {os.cpu_count()} CPUs"
    )
    if len(rounds) > 1:
        print(
            f"medians of {len(rounds)} rounds; the table's 'vs base' divides them, the ratios"
            " below it are each the median of the rounds' own"
        )
    print(report(results, summary, problems, counters, client_options(args)))
    if args.json:
        document: dict[str, Any] = {"results": results, "ratios": summary}
        if len(rounds) > 1:
            document.update(rounds=rounds, ratios_by_round=by_round)
        write_json(args.json, args, document, problems)
    if interrupted:
        return 130
    return 1 if any("failed" in r for results in rounds for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Interleaved A/B of two checkouts with bench.py: CPU µs per op and ops/s, medians of rounds.

    .venv/bin/python loadtest/bench_ab.py --a /path/to/old --b /path/to/new --rounds 3 \
        --scenarios increment_uniform batch_uniform --duration 6

On a shared machine wall-clock rates move by 2x between minutes, so comparing two runs made
apart says little. This alternates the checkouts (A, B, A, B, ...) in one script run and quotes
the median of each: the node processes' CPU per op hardly moves with other load, the ops/s do.
Each run is bench.py's own (same wrk scripts, same systems), with the nodes started from the
checkout under test (its directory is their working directory and PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(tree: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        json_path = out.name
    argv = [sys.executable, str(HERE / "bench.py"), "--systems", args.system]
    argv += ["--scenarios", *args.scenarios, "--duration", str(args.duration)]
    argv += ["--warmup", str(args.warmup), "--json", json_path]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERS_")}
    env["PYTHONPATH"] = str(tree)
    subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    try:
        results = json.loads(Path(json_path).read_text())["results"]
    finally:
        Path(json_path).unlink(missing_ok=True)
    return [r for r in results if "failed" not in r]


def per_op(result: dict[str, object], scenario_ops: int) -> float:
    cpu = result.get("cpu_us_per_request")
    return float(cpu) / scenario_ops if isinstance(cpu, (int, float)) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the old one)")
    parser.add_argument("--b", required=True, type=Path, help="checkout B (the new one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--system", default="n3")
    parser.add_argument("--scenarios", nargs="+", default=["increment_uniform", "batch_uniform"])
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    args = parser.parse_args()
    ops = {"batch_uniform": 100, "batch_zipf": 100, "keyed_batch_uniform": 100}
    seen: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for round_no in range(args.rounds):
        for label, tree in (("A", args.a), ("B", args.b)):
            for r in run_once(tree, args):
                name = str(r["scenario"])
                row = (per_op(r, ops.get(name, 1)), float(r["ops_per_s"]), float(r["p99_ms"]))
                seen.setdefault((label, name), []).append(row)
                print(
                    f"round {round_no + 1} {label} {name:<20} {row[0]:8.1f} CPU us/op "
                    f"{row[1]:10,.0f} ops/s  p99 {row[2]:7.1f} ms",
                    flush=True,
                )
    print(f"\nmedians of {args.rounds} rounds; A = {args.a}, B = {args.b}")
    for name in args.scenarios:
        line = f"{name:<20}"
        medians = {}
        for label in ("A", "B"):
            rows = seen.get((label, name), [])
            if not rows:
                line += f"  {label}: -"
                continue
            cpu = statistics.median(r[0] for r in rows)
            rate = statistics.median(r[1] for r in rows)
            p99 = statistics.median(r[2] for r in rows)
            medians[label] = cpu
            line += f"  {label}: {cpu:7.1f} us/op {rate:9,.0f} ops/s p99 {p99:6.1f} ms"
        if len(medians) == 2:
            line += f"  B/A CPU {medians['B'] / medians['A']:.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

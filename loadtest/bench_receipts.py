"""Keyed batches on one counter: does the 200th cost what the 1st did?

Starts a local cluster (3 nodes, N=3 W=2 R=2 by default; `--nodes 1` for one node), sends
`--batches` batches of `--ops` increments of one counter, each batch under a fresh
Idempotency-Key, one after another, and prints the seconds of the 1st, 100th and last batch
(and every `--every`-th). Each batch leaves `--ops` receipts behind on that counter, so a cost
that grows with the receipts held shows up as a growing time. Run from the repo root:

    .venv/bin/python loadtest/bench_receipts.py --batches 200 --ops 1000

A batch that fails or takes longer than `--timeout` seconds ends the run (the old code's
batches took seconds by the 9th and timed out by the 10th).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from bench_systems import Processes, running

NAMESPACE = "bench"
COUNTER = "receipts"


def post_batch(url: str, ops: int, timeout: float) -> tuple[int, float, dict[str, object]]:
    body = json.dumps(
        {"ops": [{"op": "increment", "name": COUNTER, "delta": 1} for _ in range(ops)]}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v1/namespaces/{NAMESPACE}/batch",
        data=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, answer = error.code, {"error": error.read().decode(errors="replace")[:300]}
    except TimeoutError:
        status, answer = 0, {"error": f"no answer within {timeout} s"}
    return status, time.perf_counter() - started, answer


def run(urls: list[str], args: argparse.Namespace) -> int:
    times: list[float] = []
    for number in range(1, args.batches + 1):
        status, seconds, answer = post_batch(urls[(number - 1) % len(urls)], args.ops, args.timeout)
        failed = [r for r in answer.get("results", []) if "error" in r]  # type: ignore[union-attr]
        if status != 200 or failed:
            detail = failed[0] if failed else answer
            print(f"batch {number}: status {status} after {seconds:.3f} s: {detail}")
            break
        times.append(seconds)
        if number in (1, 100, args.batches) or number % args.every == 0:
            print(f"batch {number:>4}: {seconds:8.3f} s", flush=True)
    if not times:
        return 1
    print(
        json.dumps(
            {
                "batches": len(times),
                "ops_per_batch": args.ops,
                "first_s": round(times[0], 4),
                "batch_100_s": round(times[99], 4) if len(times) >= 100 else None,
                "last_s": round(times[-1], 4),
                "median_s": round(sorted(times)[len(times) // 2], 4),
            }
        )
    )
    return 0 if len(times) == args.batches else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--ops", type=int, default=1000, help="increments per batch (max 1000)")
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=3)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per batch")
    parser.add_argument("--every", type=int, default=25, help="also print every n-th batch")
    parser.add_argument("--target", help="an already running node's URL instead of starting one")
    args = parser.parse_args(argv)
    if args.target:
        return run([args.target.rstrip("/")], args)
    system = "n3" if args.nodes == 3 else "n1"
    with tempfile.TemporaryDirectory(prefix="bench-receipts-") as workdir:
        processes = Processes(Path(workdir))
        with running(system, processes, []) as urls:
            return run(urls[:1], args)


if __name__ == "__main__":
    sys.exit(main())

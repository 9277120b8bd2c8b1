"""The blocking Client's CPU per call under gevent (as in Locust) and without, side by side.

locust_client.py runs one `Client` in a Locust process, where gevent has patched threading,
selectors and sockets: the client's event loop is a greenlet waiting in gevent's selector.
This measures what that costs the client process: CPU us per incr() and per add() (with
its share of the flushes), in child processes that alternate plain / gevent-patched
against one 3-node cluster, medians of the rounds.

    .venv/bin/python loadtest/bench_client_gevent.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("plain", "gevent")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(mode: str, urls: list[str], incrs: int, adds: int) -> dict[str, float]:
    """One run in this process: incr() one after another, then add() with a yield every 100
    (as Locust users yield between tasks) and a flush."""
    if mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
    from counters_client import Client

    with Client(urls) as client:
        for i in range(50):  # connections opened, topology known
            client.incr("benchgevent", f"w{i % 10}")
        started, times = _cpu_s(), []
        for i in range(incrs):
            began = time.perf_counter()
            client.incr("benchgevent", f"i{i % 100}")
            times.append(time.perf_counter() - began)
        incr_cpu = _cpu_s() - started
        started = _cpu_s()
        for i in range(adds):
            client.add("benchgevent", f"a{i % 1000}")
            if i % 100 == 99:
                time.sleep(0)  # gevent's sleep once patched: the loop's flushes run
        client.flush()
        add_cpu = _cpu_s() - started
    return {
        "incr_cpu_us": incr_cpu / incrs * 1e6,
        "incr_median_ms": statistics.median(times) * 1000,
        "add_cpu_us": add_cpu / adds * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--incrs", type=int, default=500)
    parser.add_argument("--adds", type=int, default=200_000)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "URLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, urls = args.child
        print(json.dumps(child(mode, urls.split(","), args.incrs, args.adds)))
        return 0
    sys.path.insert(0, str(HERE))
    from bench_systems import Processes, running

    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-gevent-") as workdir:
        processes = Processes(Path(workdir))
        with running("n3", processes, []) as urls:
            for _ in range(args.rounds):
                for mode in MODES:  # alternated, so both see the same machine
                    argv = [sys.executable, __file__, "--child", mode, ",".join(urls)]
                    argv += ["--incrs", str(args.incrs), "--adds", str(args.adds)]
                    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                    if done.returncode:
                        raise SystemExit(f"{mode} run failed:\n{done.stderr[-2000:]}")
                    rows[mode].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"the client process, medians of {args.rounds} alternated runs (3-node cluster):")
    print("| client | CPU us per incr() | incr() median | CPU us per add() |")
    print("|---|---|---|---|")
    medians = {}
    for mode in MODES:
        medians[mode] = {
            key: statistics.median(r[key] for r in rows[mode]) for key in rows[mode][0]
        }
        m = medians[mode]
        print(f"| {mode} | {m['incr_cpu_us']:.0f} | {m['incr_median_ms']:.1f} ms | "
              f"{m['add_cpu_us']:.2f} |")  # fmt: skip
    plain, patched = medians["plain"], medians["gevent"]
    print(f"gevent / plain: incr() CPU {patched['incr_cpu_us'] / plain['incr_cpu_us']:.2f}x, "
          f"add() CPU {patched['add_cpu_us'] / plain['add_cpu_us']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Profile a bench.py scenario: py-spy records every node of a system while wrk runs it.

    .venv/bin/python loadtest/profile_nodes.py --scenario batch_uniform --duration 8 \
        --out /tmp/prof-batch [--system n3]

Starts the system as bench.py does (loadtest/bench_systems.py, nodes from the current
directory's checkout), preloads it, warms up, then runs wrk for `--duration` seconds while
`py-spy record` samples each node process (raw collapsed stacks, idle frames left out).
Prints the frames with the most samples, self and inclusive, summed over the nodes, as
percentages of the samples taken: where the CPU of an op goes. The collapsed stacks stay in
`--out` (one file per node) for a flame graph (`py-spy` or speedscope read them).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import bench
from bench_systems import Processes, running

HERE = Path(__file__).resolve().parent


def frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': lines apart are one frame."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def py_spy() -> str:
    """py-spy beside this Python (the venv's dev dependency), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def summarise(paths: list[Path], top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [frame_name(f) for f in stack.split(";")]
            # a thread's name (py-spy's first "frame") says nothing of where the time goes
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    lines = [f"{total} samples over {len(paths)} processes", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="batch_uniform", choices=list(bench.SCENARIOS))
    parser.add_argument("--system", default="n3")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: Python's CPU, not waits for the GIL",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the stacks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wrk_args = bench.parse_args(["--scenarios", args.scenario, "--systems", args.system])
    scenario = bench.SCENARIOS[args.scenario]
    workdir = Path(tempfile.mkdtemp(prefix="counters-profile-"))
    processes = Processes(workdir)
    paths: list[Path] = []
    try:
        with running(args.system, processes, "") as urls:
            bench.preload(urls)
            bench.run_wrk(scenario, urls, args.warmup, wrk_args)
            spies = []
            for name, child in processes.children.items():
                path = args.out / f"{name}.txt"
                argv = [py_spy(), "record", "-p", str(child.pid), "-r", str(args.rate)]
                argv += ["-d", str(int(args.duration)), "-f", "raw", "-o", str(path)]
                argv += ["--nonblocking"] + (["--gil"] if args.gil else [])
                quiet = subprocess.DEVNULL
                spies.append(subprocess.Popen(argv, stdout=quiet, stderr=quiet))
                paths.append(path)
            result: dict[str, object] = {}
            runner = threading.Thread(
                target=lambda: result.update(bench.run_wrk(scenario, urls, args.duration, wrk_args))
            )
            runner.start()
            for spy in spies:
                spy.wait(timeout=args.duration + 60)
            runner.join()
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    requests = float(result.get("requests", 0) or 0)
    seconds = float(result.get("duration_s", 0) or 0)
    if seconds:
        rate = requests * scenario.ops_per_request / seconds
        print(f"{args.scenario} on {args.system}: {rate:,.0f} ops/s while profiled")
    print(summarise([p for p in paths if p.exists()], args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

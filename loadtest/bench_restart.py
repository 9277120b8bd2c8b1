"""Restart to ready alone (issue 13): start a node on copies of one filled data dir.

bench_scale.py fills a node for 10-20 minutes before each restart it times. This starts
`python -m node node` (bench_scale's flags, N=1) on a fresh copy of a data dir that run
left (`bench_scale.py --keep-dir` prints where), once per source tree, alternately, and
prints the seconds and the node's CPU seconds (all threads, from /proc) until /readyz
first answers 200, with their medians: old and new code compared in the same minutes.

    .venv/bin/python loadtest/bench_scale.py --counters 1000000 --restarts 1 --keep-dir
    .venv/bin/python loadtest/bench_restart.py --data-dir /tmp/counters-scale-XXXX/data/n1/n1 \\
        --trees /path/to/old/checkout,/path/to/new/checkout --runs 3

Each node runs with PYTHONPATH set to its tree and is stopped (SIGTERM, then SIGKILL)
before the next starts; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_systems import _http_ok, _node_env, free_port

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.02


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(data_dir: Path, tree: str, workdir: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) from spawning a node on a copy of data_dir to /readyz 200."""
    copy = workdir / "data"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data_dir, copy)
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "node", "node", "--node-id", "n1", "--listen", address]
    argv += ["--seeds", address, "--data-dir", str(copy), "--replicas", "1"]
    argv += ["--write-quorum", "1", "--read-quorum", "1", "--auth", "none"]
    argv += ["--rate-limit-per-s", "0", "--max-counters-per-tenant", "1000000"]
    env = {**_node_env(), "PYTHONPATH": tree}
    with open(workdir / "node.log", "ab") as log:
        began = time.monotonic()
        # Not from the caller's directory: `-m` would import the node package found there.
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        while not _http_ok(f"http://{address}/readyz"):
            if child.poll() is not None:
                raise RuntimeError(f"the node exited with {child.returncode}: {workdir}/node.log")
            if time.monotonic() - began > READY_TIMEOUT_S:
                raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        return time.monotonic() - began, cpu_seconds(child.pid)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="a filled node's data dir")
    parser.add_argument("--trees", default=".", help="source trees, comma separated")
    parser.add_argument("--runs", type=int, default=3, help="starts per tree")
    args = parser.parse_args(argv)
    trees = [str(Path(tree).resolve()) for tree in args.trees.split(",") if tree]
    figures: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
    workdir = Path(tempfile.mkdtemp(prefix="counters-restart-"))
    try:
        for run in range(args.runs):
            for tree in trees:
                seconds, cpu = start_once(args.data_dir, tree, workdir)
                figures[tree].append((seconds, cpu))
                print(f"run {run + 1} {tree}: ready {seconds:.2f} s, {cpu:.2f} CPU s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for tree, runs in figures.items():
        wall = statistics.median(seconds for seconds, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs)
        print(f"{tree}: median {wall:.2f} s to ready, {cpu:.2f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

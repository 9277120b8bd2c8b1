"""bench_scale.py's node processes: their resident memory and CPU time, a SIGTERM to every
node and a start on the same data dirs (each timed and bounded), and the wait for the work
a start leaves for after ready, as /metrics counts it."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from bench_systems import Processes, _http_ok

READY_TIMEOUT_S = 300.0


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


def idle_cpu_percent(processes: Processes, seconds: float) -> float:
    """The nodes' CPU time over `seconds` with no load, in % of one core (all nodes)."""
    before, began = processes.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (processes.cpu_seconds() - before) / (time.monotonic() - began)

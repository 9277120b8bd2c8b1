"""The systems bench.py measures: start each on free 127.0.0.1 ports, wait until it is ready.

A 3-node or 1-node Counters cluster (`python -m node node`), or the baseline: one redis-server
and loadtest/baseline_service.py in front of it. Every child is started in its own session and
tracked by Processes, so one finally block stops them all, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

SYSTEMS = ("n3", "baseline", "n1")
SYSTEM_ABOUT = {
    "n3": "Counters, 3 nodes, N=3 W=2 R=2",
    "n1": "Counters, 1 node, N=1 W=1 R=1",
    "n3redis": "n3 with Redis as the durable replica (--redis-url)",
    "baseline": "aiohttp + one Redis (loadtest/baseline_service.py)",
    "target": "Counters at the given --target URLs",
}


class Processes:
    """Every child this run starts, so one finally block can stop them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.argvs: dict[str, tuple[list[str], dict[str, str] | None]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # A new session keeps the terminal's Ctrl-C away from children: they stop in order,
        # here, instead of dying mid-request while wrk still counts.
        # Appends: a restarted child's log follows its earlier runs' (bench_scale.py).
        with open(self.workdir / f"{name}.log", "ab") as log:
            child = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.children[name] = child
        self.argvs[name] = (argv, env)

    def restart(self, name: str) -> None:
        """Start a child again as it was started last (it must have exited)."""
        argv, env = self.argvs[name]
        self.start(name, argv, env)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the running children have used, from /proc: unlike
        throughput, it hardly moves when other work shares the machine."""
        ticks = 0
        for child in self.children.values():
            try:
                stat = Path(f"/proc/{child.pid}/stat").read_text()
            except OSError:
                continue  # exited
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"; field 3 is [0]
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        """Each child in the reverse order of the starts, waited for before the next: the
        nodes stop before the redis-server they flush to, so their last flush lands."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in reversed(list(self.children.values())):
            if child.poll() is None:
                child.terminate()
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_ready(processes: Processes, urls: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(urls)
    while pending:
        processes.check_alive()
        pending = [url for url in pending if not _http_ok(f"{url}/readyz")]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
        if pending:
            time.sleep(0.2)


def _node_env() -> dict[str, str]:
    # A COUNTERS_* variable left in the shell would silently change the system under test.
    return {k: v for k, v in os.environ.items() if not k.startswith("COUNTERS_")}


def start_cluster(
    processes: Processes,
    system: str,
    nodes: int,
    replicas: int,
    quorum: int,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """Start the nodes, each with the `extra` flags, and wait until all are ready."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(nodes)]
    for index, address in enumerate(addresses):
        node_id = f"n{index + 1}"
        argv = [sys.executable, "-m", "node", "node", "--node-id", node_id, "--listen", address]
        argv += ["--seeds", ",".join(addresses)]
        argv += ["--data-dir", str(processes.workdir / "data" / system / node_id)]
        argv += ["--replicas", str(replicas), "--write-quorum", str(quorum)]
        argv += ["--read-quorum", str(quorum)]
        argv += ["--auth", "none"]  # the wrk scripts send no token; a JWT check is not measured
        argv += ["--rate-limit-per-s", "0"]  # the benchmark is one tenant going flat out
        argv += extra
        processes.start(f"{system}-node-{node_id}", argv, _node_env())
    urls = [f"http://{address}" for address in addresses]
    wait_ready(processes, urls)
    return urls


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(processes: Processes, name: str = "redis") -> str:
    """A throwaway redis-server that keeps nothing on disk; its URL once it answers."""
    redis_port = free_port()
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
    processes.start(name, [*redis_argv, "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _redis_ready(redis_port):
        processes.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not answer PING")
        time.sleep(0.1)
    return f"redis://127.0.0.1:{redis_port}"


def start_baseline(processes: Processes) -> list[str]:
    redis_url = start_redis(processes)
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, str(HERE / "baseline_service.py"), "--listen", address]
    processes.start("baseline", [*argv, "--redis-url", redis_url])
    urls = [f"http://{address}"]
    wait_ready(processes, urls)
    return urls


@contextlib.contextmanager
def running(system: str, processes: Processes, targets: list[str]) -> Iterator[list[str]]:
    """The URLs of a started system; it is stopped when the block ends, however it ends."""
    try:
        if system == "target":
            yield targets
        elif system == "n3":
            yield start_cluster(processes, system, nodes=3, replicas=3, quorum=2)
        elif system == "n3redis":
            extra = ("--redis-url", start_redis(processes, "n3redis-redis"))
            yield start_cluster(processes, system, nodes=3, replicas=3, quorum=2, extra=extra)
        elif system == "n1":
            yield start_cluster(processes, system, nodes=1, replicas=1, quorum=1)
        else:
            yield start_baseline(processes)
    finally:
        processes.stop_all()

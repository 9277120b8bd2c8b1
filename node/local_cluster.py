"""`counters up`: a local cluster of node processes in one command, stopped by Ctrl-C."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from node.http import auth

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="counters up")
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--base-port", type=int, default=7000, help="first node's port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-dir", default="data", help="one subfolder per node")
    parser.add_argument("--ready-timeout", type=float, default=30.0, help="seconds")
    args = parser.parse_args(list(argv))
    if not 1 <= args.nodes <= 64:
        parser.error("--nodes must be from 1 to 64")
    return args


def _stop_with_us() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send the node SIGTERM (a clean stop that flushes what
    it holds) when `counters up` dies, even by kill -9: no orphan keeps its port. Linux only;
    elsewhere orphans are possible, as with any supervisor killed by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not after
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # `up` died before prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def _start_nodes(
    addresses: list[str], data_dir: str, environment: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    processes = []
    stop_with_us = _stop_with_us()
    for index, address in enumerate(addresses):
        node_id = f"n{index + 1}"
        command = [
            sys.executable, "-m", "node", "node",
            "--node-id", node_id,
            "--listen", address,
            "--seeds", ",".join(addresses),
            "--data-dir", str(Path(data_dir) / node_id),
        ]  # fmt: skip
        processes.append(subprocess.Popen(command, env=environment, preexec_fn=stop_with_us))
    return processes


def _print_welcome(urls: list[str], ready: bool, jwt_secret: str, given_secret: bool) -> None:
    """Where the nodes are, tokens for the demo tenant, and requests to try."""
    count = len(urls)
    nodes = f"{count} node{'s' if count != 1 else ''}"
    print(f"counters: {nodes} {'ready' if ready else 'started (not all ready)'}")
    for index, url in enumerate(urls):
        print(f"  n{index + 1}  {url}")
    body = json.dumps({"delta": 1})
    day = 86400.0
    admin = auth.mint(jwt_secret, "demo", list(auth.SCOPES), day, None)
    rw = auth.mint(jwt_secret, "demo", [auth.READ, auth.WRITE], day, None)
    print(f"admin token (tenant demo, 24 h):      {admin}")
    print(f"read-write token (tenant demo, 24 h): {rw}")
    print(f"more: COUNTERS_JWT_SECRET={jwt_secret} counters token --tenant T")
    if given_secret:
        print("  (the secret came from COUNTERS_JWT_SECRET)")
    else:
        print("  (a fresh secret for this run; export COUNTERS_JWT_SECRET to choose it)")
    print("try:")
    bearer = f"-H 'Authorization: Bearer {rw}'"
    print(
        f"  curl -s {bearer} -XPOST {urls[0]}/v1/namespaces/demo/counters/views/increment"
        f" -d '{body}'"
    )
    print(f"  curl -s {bearer} {urls[-1]}/v1/namespaces/demo/counters/views")
    print(f"  curl -s -H 'Authorization: Bearer {admin}' {urls[0]}/admin/ring | head -c 600")
    print("Ctrl-C stops every node.", flush=True)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: Sequence[str]) -> int:
    args = _arguments(argv)
    addresses = [f"{args.host}:{args.base_port + i}" for i in range(args.nodes)]
    # Clients get tokens minted below, peers share the cluster secret. The JWT secret comes
    # from COUNTERS_JWT_SECRET when set, so other programs (Locust) can mint tokens too.
    given_secret = os.environ.get("COUNTERS_JWT_SECRET", "")
    jwt_secret = given_secret or secrets.token_urlsafe(32)
    environment = {
        **os.environ,
        "COUNTERS_JWT_SECRET": jwt_secret,
        "COUNTERS_CLUSTER_SECRET": secrets.token_urlsafe(32),
    }
    processes = _start_nodes(addresses, args.data_dir, environment)
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    urls = [f"http://{address}" for address in addresses]
    deadline = time.monotonic() + args.ready_timeout
    while not stop and not all(_ready(u) for u in urls) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not stop:
        _print_welcome(urls, all(_ready(u) for u in urls), jwt_secret, bool(given_secret))
    while not stop and all(p.poll() is None for p in processes):
        time.sleep(0.2)
    _stop(processes)
    return 0

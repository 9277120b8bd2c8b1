"""`counters up` (what `make run` runs): a working local cluster in one command, Ctrl-C stops it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.http.auth import READ, WRITE
from tests.cluster.harness import REPO
from tests.support import client_token, spawn


def _free_run(count: int) -> int:
    """A base port with `count` free ports after it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65536:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no run of free ports found")


def _call(url: str, token: str, body: dict[str, int] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


@contextlib.contextmanager
def _counters_up(
    data_dir: Path, base: int, nodes: int, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`counters up` running, and what it printed up to "Ctrl-C"; every node stopped after."""
    command = [sys.executable, "-m", "node", "up", "--nodes", str(nodes), "--base-port", str(base),
               "--data-dir", str(data_dir)]  # fmt: skip
    # Its own session and process group (spawn), so a failing test can stop the nodes too,
    # not only `up`.
    up = spawn(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        lines = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        yield up, "".join(lines)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(timeout=10)
        if up.stdout is not None:
            up.stdout.close()


def test_counters_up_starts_a_ready_cluster_and_ctrl_c_stops_every_node(tmp_path: Path):
    base = _free_run(3)
    env = {k: v for k, v in os.environ.items() if k != "COUNTERS_JWT_SECRET"}
    with _counters_up(tmp_path, base, 3, env) as (up, output):
        assert "3 nodes ready" in output, output
        assert f"http://127.0.0.1:{base + 2}" in output and "curl" in output
        assert "a fresh secret" in output, output
        first, last = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 2}"
        tokens = dict(re.findall(r"^(admin|read-write) token [^:]*:\s+(\S+)$", output, re.M))
        assert set(tokens) == {"admin", "read-write"}, output
        views = "/v1/namespaces/demo/counters/views"
        assert _call(first + views + "/increment", tokens["read-write"], {"delta": 3})["value"] == 3
        assert _call(last + views, tokens["read-write"])["value"] == 3
        assert "preference_lists" in _call(first + "/admin/ring", tokens["admin"])
        with pytest.raises(urllib.error.HTTPError) as refused:  # a node that needs a token
            urllib.request.urlopen(last + views, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=20) == 0
        for port in range(base, base + 3):  # every node is gone: nothing listens there
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))


def test_counters_up_takes_its_jwt_secret_from_the_environment_when_set(tmp_path: Path):
    """So other programs (loadtest/locustfile.py) can mint tokens for a `make run` cluster."""
    secret = "chosen-by-the-operator-" * 2
    base = _free_run(1)
    env = {**os.environ, "COUNTERS_JWT_SECRET": secret}
    with _counters_up(tmp_path, base, 1, env) as (_, output):
        assert "1 node ready" in output and "came from COUNTERS_JWT_SECRET" in output, output
        token = client_token(secret, "acme", [READ, WRITE], ttl_s=60)
        views = f"http://127.0.0.1:{base}/v1/namespaces/web/counters/views"
        assert _call(views + "/increment", token, {"delta": 2})["value"] == 2


def test_nodes_stop_when_counters_up_is_killed(tmp_path: Path):
    """kill -9 of `counters up` (a closed terminal, an OOM kill) leaves no node holding its
    port: the kernel sends each node SIGTERM, and it stops cleanly."""
    base = _free_run(2)
    env = {k: v for k, v in os.environ.items() if k != "COUNTERS_JWT_SECRET"}
    with _counters_up(tmp_path, base, 2, env) as (up, output):
        assert "2 nodes ready" in output, output
        up.kill()  # only `up`, not its process group
        up.wait(timeout=10)
        deadline = time.monotonic() + 20
        for port in range(base, base + 2):
            while True:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind(("127.0.0.1", port))
                        break
                    except OSError:
                        assert time.monotonic() < deadline, f"a node still holds port {port}"
                time.sleep(0.2)

"""Real node processes on 127.0.0.1 for cluster tests: start, kill -9, pause, restart.

Every wait has a deadline and fails with what it last saw; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster import node_logs
from tests.support import bearer, eventually, free_port, spawn

REPO = Path(__file__).resolve().parents[2]
# Fast timings so faults are noticed and healed within seconds.
FAST = {
    "COUNTERS_GOSSIP_INTERVAL_S": "0.2",
    "COUNTERS_FAILURE_TIMEOUT_S": "1.5",
    "COUNTERS_REQUEST_TIMEOUT_S": "2",
    "COUNTERS_SYNC_SHARDS_PER_ROUND": "256",
    # Most cluster tests are about replication, not tokens; test_auth.py turns auth on.
    "COUNTERS_AUTH": "none",
}


class Node:
    def __init__(self, cluster: Cluster, node_id: str, port: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cluster.root / f"{node_id}.log"
        # The test killed (kill -9) or paused the current process: how it ends is its doing.
        self.faulted = False
        self.ever_faulted = False
        self.exit_problems: list[str] = []  # how earlier processes of this node ended badly

    def start(self, seeds: list[str], **settings: str) -> None:
        self._retire()
        env = {**os.environ, **FAST, **self.cluster.settings, **settings}
        if env.get("COUNTERS_AUTH") == "jwt":  # which refuses the development cluster secret
            env.setdefault("COUNTERS_CLUSTER_SECRET", "harness-cluster-secret")
        command = [
            sys.executable, "-m", "node", "node",
            "--node-id", self.node_id,
            "--listen", self.address,
            "--data-dir", str(self.cluster.root / self.node_id),
        ]  # fmt: skip
        if seeds:
            command += ["--seeds", ",".join(seeds)]
        log = open(self.log_path, "ab")
        self.process = spawn(command, cwd=REPO, env=env, stdout=log, stderr=log)
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _retire(self) -> None:
        """Note how the previous process ended, before another one takes its place."""
        if self.process is None:
            return
        assert not self.running, f"{self.node_id} is still running"
        code = self.process.returncode
        if code != 0 and not self.faulted:
            self.exit_problems.append(f"process {self.process.pid} exited with {code}")
        self.process = None
        self.faulted = False

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        assert self.process is not None
        self.faulted = self.ever_faulted = True
        self.process.kill()
        self.process.wait(timeout=10)

    def pause(self) -> None:
        assert self.process is not None
        self.faulted = self.ever_faulted = True
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def terminate(self) -> int | None:
        """SIGTERM, as an operator stops a node; its exit code (0 for a clean stop: aiohttp's
        run_app turns SIGTERM into a graceful shutdown), or None if it had to be killed."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            if not self.faulted:
                self.exit_problems.append(
                    f"process {self.process.pid} did not stop within 10s of SIGTERM"
                )
            return None

    def problems(self, faulted: bool) -> list[str]:
        """How this node's processes ended badly and what its log holds that it should not;
        `faulted`: the test killed or paused some node of the cluster. Call once stopped."""
        self._retire()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        found = self.exit_problems + [str(p) for p in node_logs.problems(text, faulted)]
        self.exit_problems = []
        return found

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(self, root: Path, session: aiohttp.ClientSession | None, **settings: str) -> None:
        self.root = root
        self.session = session
        self.settings = settings
        self.nodes: dict[str, Node] = {}

    def add(self, node_id: str) -> Node:
        node = self.nodes[node_id] = Node(self, node_id, free_port())
        return node

    def seeds(self) -> list[str]:
        return [node.address for node in self.nodes.values()]

    async def start(self, count: int) -> list[Node]:
        nodes = [self.add(f"n{i + 1}") for i in range(count)]
        for node in nodes:
            node.start(self.seeds())
        for node in nodes:
            await self.wait_ready(node)
        await self.settled_ring(nodes, {node.node_id for node in nodes})
        return nodes

    async def settled_ring(
        self, nodes: list[Node], owners: set[str] | None = None, timeout: float = 40.0
    ) -> dict[str, Any]:
        """Wait until every one of `nodes` reports one settled ring (the same epoch and checksum,
        no hand-off pending) whose shards are held by exactly `owners`, when given, each of
        them up in every node's view; return that ring as the first node reports it."""
        seen: dict[str, Any] = {}

        async def settled() -> dict[str, Any] | None:
            seen.clear()
            rings = {node.node_id: await self.ring(node) for node in nodes}
            seen.update(
                (node_id, (ring["epoch"], ring["checksum"][:12], ring["pending"] is not None))
                for node_id, ring in rings.items()
            )
            if len({(ring["epoch"], ring["checksum"]) for ring in rings.values()}) != 1:
                return None
            for ring in rings.values():
                if ring["pending"] is not None:
                    return None
                if owners is not None:
                    statuses = {m["node_id"]: m["status"] for m in ring["members"]}
                    if set(ring["shards_per_node"]) != owners:
                        return None
                    if any(statuses.get(owner) != "up" for owner in owners):
                        return None
            return rings[nodes[0].node_id]

        try:
            ring: dict[str, Any] = await eventually(settled, "one settled ring", timeout)
        except AssertionError:
            raise AssertionError(
                f"no settled ring of {sorted(owners or [])} within {timeout}s; "
                f"last saw (epoch, checksum, pending) {seen}"
            ) from None
        return ring

    async def wait_all_up(self, observer: Node, count: int) -> None:
        """Wait until the observer sees `count` members, every one up."""

        async def all_up() -> bool:
            status, body = await self.get(observer, "/admin/nodes")
            statuses = [m["status"] for m in body["nodes"]] if status == 200 else []
            return len(statuses) == count and set(statuses) == {"up"}

        await eventually(all_up, f"{observer.node_id} to see {count} members up", 30)

    async def wait_ready(self, node: Node, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            if not node.running:
                raise AssertionError(f"{node.node_id} exited:\n{node.log_tail()}")
            status, _ = await self.get(node, "/readyz")
            return status == 200

        await eventually(ready, f"{node.node_id} ready", timeout)

    async def request(
        self,
        method: str,
        node: Node,
        path: str,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        assert self.session is not None, "this Cluster was made without a client session"
        timeout = aiohttp.ClientTimeout(total=10)
        if headers is None and self.settings.get("COUNTERS_AUTH") == "jwt":
            headers = self._admin_headers()  # the harness's own calls act as an operator
        if isinstance(data, bytes):
            data = io.BytesIO(data)  # aiohttp warns about large raw bytes bodies
        async with self.session.request(
            method, node.url + path, json=json, data=data, timeout=timeout, headers=headers
        ) as response:
            text = await response.text()
            try:
                body = await response.json(content_type=None) if text else None
            except ValueError:
                body = text
            return response.status, body

    def _admin_headers(self) -> dict[str, str]:
        from node.http.auth import SCOPES

        return bearer(self.settings["COUNTERS_JWT_SECRET"], "default", SCOPES)

    async def get(self, node: Node, path: str) -> tuple[int, Any]:
        return await self.request("GET", node, path)

    async def increment(self, node: Node, ns: str, name: str, delta: int, **query: str) -> Any:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        path = f"/v1/namespaces/{ns}/counters/{name}/increment" + (f"?{qs}" if qs else "")
        return await self.request("POST", node, path, json={"delta": delta})

    async def value(self, node: Node, ns: str, name: str, consistency: str = "one") -> int:
        path = f"/v1/namespaces/{ns}/counters/{name}?consistency={consistency}"
        status, body = await self.get(node, path)
        assert status == 200, (status, body)
        return int(body["value"])

    async def converged(self, ns: str, expected: dict[str, int], nodes: list[Node]) -> None:
        """Every node's local replica (consistency=one) holds exactly the expected totals."""

        seen: dict[str, dict[str, int]] = {}

        async def check() -> bool:
            for node in nodes:
                seen[node.node_id] = {name: await self.value(node, ns, name) for name in expected}
            return all(values == expected for values in seen.values())

        try:
            await eventually(check, "convergence", 30.0)
        except AssertionError:
            raise AssertionError(f"never converged on {expected}; last saw {seen}") from None

    async def agreed(self, ns: str, names: list[str], nodes: list[Node]) -> dict[str, int]:
        """Wait until every node's local replica holds the same totals; return them."""
        seen: dict[str, dict[str, int]] = {}

        async def check() -> bool:
            for node in nodes:
                seen[node.node_id] = {name: await self.value(node, ns, name) for name in names}
            return len({tuple(values.items()) for values in seen.values()}) == 1

        await eventually(check, f"nodes to agree on {names}", 30.0)
        return next(iter(seen.values()))

    async def ring(self, node: Node) -> dict[str, Any]:
        status, body = await self.get(node, "/admin/ring")
        assert status == 200, body
        return dict(body)

    async def wait_marked_down(self, observer: Node, node: Node) -> None:
        async def down() -> bool:
            ring = await self.ring(observer)
            return any(
                m["node_id"] == node.node_id and m["status"] == "down" for m in ring["members"]
            )

        await eventually(down, f"{observer.node_id} to see {node.node_id} down", 10)

    def close(self) -> None:
        for node in self.nodes.values():
            node.terminate()

    async def stop(self) -> None:
        """SIGTERM every node at once and wait in threads: the event loop keeps serving
        what the test runs beside the nodes (a trace collector they flush to as they stop)."""
        await asyncio.gather(*(asyncio.to_thread(n.terminate) for n in self.nodes.values()))

    def assert_clean(self) -> None:
        """Fail if a node exited non-zero (unless the test killed or paused it) or logged an
        error or a traceback that tests/cluster/node_logs.py does not expect. After close()."""
        faulted = any(node.ever_faulted for node in self.nodes.values())
        report = []
        for node in self.nodes.values():
            found = node.problems(faulted)
            if found:
                listed = "\n".join(f"  {problem}" for problem in found[:10])
                more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
                report.append(f"{node.node_id} ({node.log_path}):\n{listed}{more}")
        if report:
            raise AssertionError("nodes went wrong:\n" + "\n".join(report))


@contextlib.contextmanager
def one_node(root: Path, timeout: float = 30.0, **settings: str) -> Iterator[Node]:
    """One ready node process for synchronous tests (Hypothesis, schemathesis), which cannot
    share an event loop with the node's client; stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root, None, **settings)
    node = cluster.add("n1")
    node.start([])
    try:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if not node.running:
                raise AssertionError(f"n1 exited:\n{node.log_tail()}")
            try:
                with urllib.request.urlopen(node.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except urllib.error.HTTPError as error:  # a 503 while it starts
                error.close()  # it holds the response, and with it the socket
                last = error
            except (urllib.error.URLError, OSError) as error:
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(f"n1 not ready after {timeout}s; last saw {last!r}")
            time.sleep(0.1)
        yield node
    finally:
        cluster.close()
    cluster.assert_clean()  # only when the body passed: its own failure says more

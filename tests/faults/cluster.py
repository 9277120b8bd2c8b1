"""Real node processes, each in its own network namespace, for fault runs.

The cluster harness (tests/cluster/harness.py) does the work: start, kill -9, pause, resume,
wait for readiness and a settled ring. What differs here is where a node lives: node i runs as
`ip netns exec <ns i> python -m node node --listen 10.77.<run>.<i+2>:7000`, started with the
parent-death signal by tests/support's spawn, and clients in the root namespace reach it over
the bridge. Redis and PostgreSQL are private to the run (it stops and restarts them) and
listen on the bridge address as well as 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import aiohttp

from tests.cluster.harness import FAST, REPO, Cluster, Node
from tests.faults.netns import Network
from tests.integration.postgres_server import PostgresServer
from tests.integration.redis_servers import RedisServer
from tests.support import spawn

NODE_PORT = 7000  # the same in every namespace: each node has an address of its own


class NamespacedNode(Node):
    def __init__(self, cluster: FaultCluster, node_id: str, index: int) -> None:
        super().__init__(cluster, node_id, NODE_PORT)
        self.index = index  # its place in the Network: namespace and address
        self.network = cluster.network
        self.address = f"{self.network.address(index)}:{NODE_PORT}"
        self.url = f"http://{self.address}"
        self.data_dir = cluster.root / node_id

    def start(self, seeds: list[str], **settings: str) -> None:
        self._retire()
        env = {**os.environ, **FAST, **self.cluster.settings, **settings}
        command = [
            *self.network.exec_prefix(self.index),  # `ip netns exec` execs: same pid
            sys.executable, "-m", "node", "node",
            "--node-id", self.node_id,
            "--listen", self.address,
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if seeds:
            command += ["--seeds", ",".join(seeds)]
        with open(self.log_path, "ab") as log:
            self.process = spawn(command, cwd=REPO, env=env, stdout=log, stderr=log)

    def restart(self) -> None:
        """Start again after a kill -9 (or a wiped data dir), with every peer as a seed."""
        self.start(self.cluster.seeds())

    def wipe(self) -> None:
        """Kill -9 and delete the data dir, as when a disk is replaced."""
        if self.running:
            self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class FaultCluster(Cluster):
    """A harness Cluster whose nodes live in a Network's namespaces."""

    def __init__(
        self, root: Path, session: aiohttp.ClientSession, network: Network, **settings: str
    ) -> None:
        super().__init__(root, session, **settings)
        self.network = network

    def add(self, node_id: str) -> Node:
        node = NamespacedNode(self, node_id, len(self.nodes))
        self.nodes[node_id] = node
        return node

    def node(self, index: int) -> NamespacedNode:
        found = list(self.nodes.values())[index]
        assert isinstance(found, NamespacedNode)
        return found


class BridgeServers:
    """A private Redis and PostgreSQL reachable from every namespace at the bridge address."""

    def __init__(self, root: Path, network: Network) -> None:
        gateway = network.gateway
        self.redis = RedisServer(
            root / "redis", options={"bind": f"127.0.0.1 {gateway}", "protected-mode": "no"}
        )
        self.postgres = PostgresServer(root / "postgres", listen=f"127.0.0.1,{gateway}")
        self.cidr = network.cidr
        self.gateway = gateway

    @property
    def redis_url(self) -> str:
        return f"redis://{self.gateway}:{self.redis.port}/0"

    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@{self.gateway}:{self.postgres.port}/counters"

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()
        self._trust_the_bridge()

    def close(self) -> None:
        self.redis.close()
        self.postgres.close()

    def _trust_the_bridge(self) -> None:
        """initdb trusts 127.0.0.1 only; the nodes connect from the run's subnet."""
        data_dir = self.postgres.data_dir
        assert data_dir is not None
        with open(data_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.cidr} trust\n")
        postmaster = int((data_dir / "postmaster.pid").read_text().split("\n")[0])
        os.kill(postmaster, signal.SIGHUP)  # reload pg_hba.conf

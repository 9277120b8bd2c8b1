"""Throwaway Redis servers for tests and benchmarks: one RedisServer, or a RedisCluster of them.

Each listens on a free 127.0.0.1 port, keeps its files in the directory it is given, fails
loudly with a ServerError when it cannot start, and never outlives the process that started it
(see servers.py). Plain classes with no pytest in them, so benchmarks can use them as well:

    with RedisServer(tmp_dir) as server:
        client = redis.asyncio.Redis.from_url(server.url)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.servers import (
    START_TIMEOUT_S,
    ManagedServer,
    ProcessGroup,
    ServerError,
    launch_on_a_free_port,
    require_binary,
    run_command_checked,
    wait_until,
)
from tests.support.net import free_port


class RedisServer(ManagedServer):
    """One redis-server on 127.0.0.1 that saves nothing unless `options` say so.

    `options` are extra config directives appended after the defaults, so they win:
    {"appendonly": "yes", "appendfsync": "always"} makes a server that survives kill().
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)  # --dir: AOF, RDB and the log live here
        self.port = port  # chosen at the first start when None, then kept for restarts
        self.options = dict(options or {})
        self.bus_port: int | None = None  # cluster bus port, for cluster-enabled servers
        self.log_path = self.directory / "redis.log"
        self.startup_s: float | None = None  # seconds the last start() took
        self._port_chosen = port is not None
        self._process: ProcessGroup | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited()

    def start(self) -> Self:
        """Launch redis-server and wait until it answers PING with its data loaded."""
        if self.running:
            raise ServerError(f"redis-server on port {self.port} is already running")
        binary = require_binary("redis-server", "apt-get install redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        # The default cluster bus port, port + 10000, may be taken or even past 65535.
        own_bus_port = (
            self.options.get("cluster-enabled") == "yes" and "cluster-port" not in self.options
        )
        started = time.monotonic()
        if own_bus_port and self.bus_port is None:
            self.bus_port = free_port()

        def pick_ports() -> None:
            self.port = free_port()
            if own_bus_port:
                self.bus_port = free_port()

        launch_on_a_free_port(
            self._port_chosen, pick_ports, lambda: self._launch(binary), self.stop
        )
        self._port_chosen = True
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """SIGTERM (Redis saves only what its options ask), then SIGKILL what is left."""
        if self._process is not None:
            self._process.stop(signal.SIGTERM, self._process.pgid)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def restart(self) -> Self:
        """Stop if running, then start again on the same port and directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop for good; the directory stays for post-mortems."""
        self.stop()

    def _launch(self, binary: str) -> None:
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip
        for name, value in self.options.items():
            argv += [f"--{name}", value]
        if self.bus_port is not None and "cluster-port" not in self.options:
            argv += ["--cluster-port", str(self.bus_port)]
        self._process = process = ProcessGroup(argv, self.log_path)
        what = f"redis-server on 127.0.0.1:{self.port}"
        if not wait_until(lambda: self._answers(process, what), START_TIMEOUT_S):
            raise process.error(f"{what} did not answer PING within {START_TIMEOUT_S:g} s")

    def _answers(self, process: ProcessGroup, what: str) -> bool:
        if process.exited():
            raise process.error(f"{what} exited with code {process.returncode()} while starting")
        try:
            with _redis_client(self.port) as client:
                info = client.info("server", "persistence")
        except redis.RedisError:
            return False
        # Another test's server may have won the port; ours then exits, and the loop retries.
        return bool(info["process_id"] == process.pgid and info["loading"] == 0)


class RedisCluster(ManagedServer):
    """A Redis Cluster of `masters` masters without replicas, all slots assigned."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)  # one node<i>/ directory per master
        self.masters = masters  # redis-cli refuses to create a cluster of fewer than 3
        self.options = dict(options or {})  # extra config directives for every node
        self.nodes: list[RedisServer] = []
        self.startup_s: float | None = None  # seconds the last start() took

    @property
    def url(self) -> str:
        """One node's URL: enough for a cluster client to discover the rest."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> Self:
        """Start the masters, join them with redis-cli, wait until every node says ok."""
        if self.nodes:
            raise ServerError(f"Redis Cluster in {self.directory} is already running")
        cli = require_binary("redis-cli", "apt-get install redis-tools")
        started = time.monotonic()
        try:
            for index in range(self.masters):
                node_dir = self.directory / f"node{index}"
                options = {
                    "cluster-enabled": "yes",
                    "cluster-config-file": str(node_dir / "nodes.conf"),
                    "cluster-node-timeout": "5000",
                    **self.options,
                }
                self.nodes.append(RedisServer(node_dir, options=options).start())
            self._create(cli)
            if not wait_until(self._all_ok, START_TIMEOUT_S):
                raise ServerError(
                    f"Redis Cluster on ports {self._ports()} did not reach cluster_state:ok "
                    f"within {START_TIMEOUT_S:g} s; CLUSTER INFO per node: {self._states()}"
                )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def close(self) -> None:
        self.stop()

    def _ports(self) -> list[int | None]:
        return [node.port for node in self.nodes]

    def _create(self, cli: str) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        run_command_checked(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        )

    def _cluster_state(self, node: RedisServer) -> str:
        try:
            with _redis_client(node.port) as client:
                info = client.execute_command("CLUSTER INFO")
        except redis.RedisError as error:
            return f"unreachable ({error})"
        if isinstance(info, bytes):
            info = info.decode()
        if isinstance(info, str):
            info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return str(info.get("cluster_state", "unknown"))

    def _all_ok(self) -> bool:
        for node in self.nodes:
            if not node.running:
                raise ServerError(f"Redis Cluster node on port {node.port} died while joining")
        return all(self._cluster_state(node) == "ok" for node in self.nodes)

    def _states(self) -> dict[int | None, str]:
        return {node.port: self._cluster_state(node) for node in self.nodes}


def _redis_client(port: int | None) -> redis.Redis:
    """A client for one probe: the caller's loop does the retrying, within its own bound."""
    return redis.Redis(
        host="127.0.0.1",
        port=port or 0,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )

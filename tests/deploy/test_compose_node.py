"""A node started as compose/docker-compose.yml starts node1 runs, and exports every metric
that the Grafana dashboard and the alert rules query.

The command is the image's CMD from compose/Dockerfile, run from this venv's bin; the
environment is the image's ENV, then node1's `environment` from the compose file with the
variables of compose/.env.example, with only what cannot be the same here changed
(OVERRIDDEN, DROPPED). Redis Cluster and PostgreSQL are this session's test servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.base import config
from node.http.auth import SCOPES
from tests.deploy import deployment as d
from tests.integration.postgres_server import PostgresServer
from tests.integration.redis_servers import RedisCluster
from tests.support import bearer, eventually, free_port, spawn

# The only settings that differ from the compose file's node1, each for a reason:
OVERRIDDEN = {
    "COUNTERS_LISTEN",  # 127.0.0.1 and a free port: tests bind the loopback only
    "COUNTERS_ADVERTISE",  # the same address: no host is called node1 here
    "COUNTERS_SEEDS",  # itself, a cluster of one: node2 and node3 do not run here
    "COUNTERS_DATA_DIR",  # a fresh directory instead of the node1-data volume
    "COUNTERS_REDIS_CLUSTER_URL",  # this session's Redis Cluster instead of redis-1
    "COUNTERS_EVENTS_REDIS_CLUSTER_URL",  # the same, for the change feed's streams
    "COUNTERS_POSTGRES_URL",  # a database of its own in this session's PostgreSQL
}
DROPPED = {"COUNTERS_OTLP_ENDPOINT"}  # no Jaeger here; a node exports no traces without it
# A node ignores unknown COUNTERS_* variables, so a misspelt one would go unnoticed: every
# variable the compose file gives must be a setting.
STOP_TIMEOUT_S = 10.0


@dataclass
class ComposeNode:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def compose_node(
    redis_cluster: RedisCluster,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ComposeNode]:
    compose_env = d.service_environment(d.compose()["services"]["node1"], d.env_example())
    address = f"127.0.0.1:{free_port()}"
    data_dir = tmp_path_factory.mktemp("node1-data")
    here = {
        "COUNTERS_LISTEN": address,
        "COUNTERS_ADVERTISE": address,
        "COUNTERS_SEEDS": address,
        "COUNTERS_DATA_DIR": str(data_dir),
        "COUNTERS_REDIS_CLUSTER_URL": redis_cluster.url,
        "COUNTERS_EVENTS_REDIS_CLUSTER_URL": redis_cluster.url,
        "COUNTERS_POSTGRES_URL": postgres_server.create_database(f"deploy_{uuid.uuid4().hex[:12]}"),
    }
    assert here.keys() == OVERRIDDEN
    assert OVERRIDDEN | DROPPED <= compose_env.keys(), "the compose file changed: update here"
    kept = {name: value for name, value in compose_env.items() if name not in DROPPED}
    bin_dir = Path(sys.executable).parent
    # Nothing of this shell's environment but PATH, as in a container.
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env |= d.image_environment() | kept | here
    command = d.image_command()
    executable = bin_dir / command[0]
    assert executable.is_file(), f"{command[0]} is not installed in {bin_dir}"
    log_path = data_dir.parent / "node1.log"
    with log_path.open("wb") as log:
        process = spawn(
            [str(executable), *command[1:]],
            cwd=data_dir,  # the image's WORKDIR is its data dir
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield ComposeNode(f"http://{address}", env, process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


async def _ready(session: aiohttp.ClientSession, node: ComposeNode) -> None:
    async def ready() -> bool:
        if node.process.poll() is not None:
            raise AssertionError(
                f"the node exited with {node.process.returncode}:\n{node.log_tail()}"
            )
        async with session.get(f"{node.url}/readyz") as response:
            return response.status == 200

    await eventually(ready, "the compose-configured node to be ready", 30)


def _bearer(node: ComposeNode) -> dict[str, str]:
    return bearer(node.env["COUNTERS_JWT_SECRET"], "deploy-test", SCOPES)


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        body = await response.json(content_type=None) if response.content_length != 0 else None
        return response.status, body


def test_compose_environment_is_a_valid_node_configuration():
    """Each node's environment, exactly as compose gives it, passes the node's own checks."""
    services = d.compose()["services"]
    for name in d.NODE_SERVICES:
        env = d.image_environment() | d.service_environment(services[name], d.env_example())
        settings = config.parse([], env)
        known = {config.ENV_PREFIX + f.name.upper() for f in dataclasses.fields(config.Config)}
        unknown = {n for n in env if n.startswith(config.ENV_PREFIX)} - known
        assert not unknown, f"{name}: no node setting reads {sorted(unknown)}"
        assert (settings.node_id, settings.address) == (name, f"{name}:7000")
        assert settings.port == 7000 and settings.redis_cluster_url and settings.postgres_url
        assert settings.auth == "jwt" and settings.jwt_algorithm_list() == ["HS256"]


async def test_node_runs_from_the_compose_command_and_environment(compose_node: ComposeNode):
    ns = "deploy-" + uuid.uuid4().hex[:8]
    counter = f"{compose_node.url}/v1/namespaces/{ns}/counters/views"
    headers = _bearer(compose_node)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _ready(session, compose_node)
        status, body = await _call(
            session, "POST", f"{counter}/increment", json={"delta": 3}, headers=headers
        )
        assert status == 200, body
        status, body = await _call(session, "GET", counter, headers=headers)
        assert (status, body["value"]) == (200, 3), body
        status, _ = await _call(session, "GET", counter)
        assert status == 401, "the compose node must demand tokens"
        status, ring = await _call(
            session, "GET", f"{compose_node.url}/admin/ring", headers=headers
        )
        assert status == 200, ring
    assert ring["node"] == "node1"
    assert ring["persistence"]["durable"] == "redis-cluster" and ring["persistence"]["healthy"]


async def test_image_health_check_passes_on_a_ready_node_and_fails_without_one(
    compose_node: ComposeNode,
):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _ready(session, compose_node)
    [check] = d.image_instructions("HEALTHCHECK")
    kind, program, *arguments = check.value
    assert (kind, program) == ("CMD", "python")
    command = [str(Path(sys.executable).parent / program), *arguments]
    code, stderr = await _run(command, compose_node.env)
    assert code == 0, stderr.decode()[-500:]
    nobody = {**compose_node.env, "COUNTERS_LISTEN": f"127.0.0.1:{free_port()}"}
    assert (await _run(command, nobody))[0] != 0


async def _run(command: list[str], env: dict[str, str]) -> tuple[int | None, bytes]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, stderr


async def _exercise(session: aiohttp.ClientSession, node: ComposeNode) -> None:
    """Requests of every kind, so labelled families have samples: increments (one replayed
    by its Idempotency-Key), reads, a batch, a reset, and a refused and a missing request."""
    ns = "deploy-" + uuid.uuid4().hex[:8]
    base = f"{node.url}/v1/namespaces/{ns}"
    headers = _bearer(node)
    replay = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    for _ in range(2):
        status, body = await _call(
            session, "POST", f"{base}/counters/likes/increment", json={"delta": 2}, headers=replay
        )
        assert status == 200, body
    ops = {"ops": [{"op": "increment", "name": "shares"}, {"op": "get", "name": "likes"}]}
    status, body = await _call(session, "POST", f"{base}/batch", json=ops, headers=headers)
    assert status == 200, body
    status, body = await _call(session, "GET", f"{base}/counters/likes", headers=headers)
    assert (status, body["value"]) == (200, 2), body
    status, body = await _call(session, "DELETE", f"{base}/counters/shares", headers=headers)
    assert status in (200, 204), body
    status, _ = await _call(session, "GET", f"{base}/counters/likes")
    assert status == 401
    status, _ = await _call(session, "GET", f"{node.url}/nowhere", headers=headers)
    assert status == 404


async def test_node_exports_every_metric_the_dashboard_and_alerts_query(compose_node: ComposeNode):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _ready(session, compose_node)
        await _exercise(session, compose_node)
        async with session.get(f"{compose_node.url}/metrics") as response:
            assert response.status == 401  # without the token: tenants are not for everyone
        # As Prometheus scrapes it: with the token compose gives both sides.
        token = compose_node.env["COUNTERS_METRICS_TOKEN"]
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{compose_node.url}/metrics", headers=headers) as response:
            text = await response.text()
            assert response.status == 200, (
                f"GET /metrics answered {response.status}, so Prometheus could scrape nothing: "
                f"{text[:300]}"
            )
            assert response.content_type == "text/plain", response.content_type
    families = list(text_string_to_metric_families(text))
    missing = d.unexported(families)
    ours = sorted(f.name for f in families if f.name.startswith("counters_"))
    assert not missing, (
        "queried but not exported:\n"
        + "\n".join(f"  {name}: {', '.join(places[:3])}" for name, places in missing.items())
        + f"\nthe node exports the families {ours}"
    )
    [ready] = [s.value for f in families if f.name == "counters_node_ready" for s in f.samples]
    assert ready == 1

"""One fault run from start to teardown: network, servers, nodes, clients, nemesis, checker.

    report = await fault_run(tmp_path, short_plan(seed_from_env()))

The plan's seed is printed first, so any run can be repeated with FAULTS_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.cluster import node_logs
from tests.faults import checker, nemesis
from tests.faults.cluster import BridgeServers, FaultCluster
from tests.faults.drops import Drops
from tests.faults.netns import Network
from tests.faults.workload import Clients

WARM_UP_S = 2.0  # seconds of load before the first fault, so every client is under way


@dataclass(frozen=True)
class Plan:
    seed: int
    nodes: int
    kinds: tuple[str, ...]  # fault kinds, each once, in an order the seed picks
    fault_s: float  # seconds each fault lasts
    quiet_s: float  # seconds after each heal before the next fault

    def describe(self) -> str:
        return (
            f"FAULTS_SEED={self.seed}: {self.nodes} nodes, {len(self.kinds)} faults of "
            f"{self.fault_s:g} s, {self.quiet_s:g} s after each heal"
        )


def seed_from_env() -> int:
    """FAULTS_SEED when set (to rerun a failure), else a fresh one."""
    text = os.environ.get("FAULTS_SEED", "").strip()
    if text:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"FAULTS_SEED must be an integer, not {text!r}") from None
    return random.SystemRandom().randrange(1, 1_000_000)


def short_plan(seed: int) -> Plan:
    """About a minute: a split, a one-way link, a pause and a kill -9 on three nodes."""
    return Plan(seed, 3, ("split", "one-way", "pause", "kill"), fault_s=4.0, quiet_s=7.0)


def full_plan(seed: int) -> Plan:
    """Every fault kind on five nodes (a 3|2 split), a few minutes."""
    return Plan(seed, 5, nemesis.ALL_KINDS, fault_s=8.0, quiet_s=8.0)


@asynccontextmanager
async def running_cluster(
    root: Path, nodes: int, session: aiohttp.ClientSession, **settings: str
) -> AsyncIterator[tuple[FaultCluster, Drops, BridgeServers]]:
    """A ready cluster in namespaces with its Redis and PostgreSQL; all torn down on exit.
    `settings` are COUNTERS_* variables for every node."""
    with Network(nodes) as network:
        servers = BridgeServers(root, network)
        try:
            await asyncio.to_thread(servers.start)
            network_drops = Drops(network)
            cluster = FaultCluster(
                root / "nodes",
                session,
                network,
                COUNTERS_REDIS_URL=servers.redis_url,
                COUNTERS_POSTGRES_URL=servers.postgres_url,
                **settings,
            )
            (root / "nodes").mkdir(exist_ok=True)
            try:
                await cluster.start(nodes)
                yield cluster, network_drops, servers
            finally:
                await cluster.stop()
                print(log_problems(cluster), flush=True)
        finally:
            await asyncio.to_thread(servers.close)


def log_problems(cluster: FaultCluster, shown: int = 3) -> str:
    """Errors and raw text (tracebacks) in the nodes' logs, for the report: under faults some
    are expected, so they are shown, not asserted (tests/cluster asserts clean logs)."""
    lines = ["errors and tracebacks in the node logs:"]
    for node in cluster.nodes.values():
        try:
            text = node.log_path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        found = node_logs.problems(text, faulted=True)
        distinct = list(dict.fromkeys(p.text.splitlines()[-1][:120] for p in found))
        lines.append(f"  {node.node_id}: {len(found)} ({node.log_path})")
        lines += [f"    {text}" for text in distinct[:shown]]
    return "\n".join(lines)


async def fault_run(root: Path, plan: Plan, log: list[str] | None = None) -> checker.Report:
    """Run the plan's faults under load, heal, and check; the report (never raises for a
    broken promise: the caller asserts on report.violations and report.targets_missed)."""
    log = [] if log is None else log
    faults = nemesis.schedule(plan.seed, plan.nodes, plan.kinds)
    print(plan.describe(), flush=True)
    report = checker.Report()
    async with (
        aiohttp.ClientSession() as session,
        running_cluster(root, plan.nodes, session) as (cluster, drops, servers),
    ):
        names = list(cluster.nodes)
        print("schedule: " + "; ".join(f.describe(names) for f in faults), flush=True)
        clients = Clients(session, list(cluster.nodes.values()), plan.seed)
        chaos = nemesis.Nemesis(cluster, drops, servers, plan.fault_s, plan.quiet_s)
        clients.start()
        try:
            await asyncio.sleep(WARM_UP_S)
            await chaos.run(faults, log)
        finally:
            await clients.stop()
            await chaos.heal_everything()
        for node in cluster.nodes.values():
            await cluster.wait_ready(node, timeout=60.0)
        checker.availability(report, clients.records, chaos.windows, names)
        await checker.converge(report, cluster, clients.records)
        await checker.one_ring(report, cluster)
        report.ops = len(clients.records)
    print("\n".join(log), flush=True)
    print(report.table(), flush=True)
    return report

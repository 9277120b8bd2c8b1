"""The nemesis: a seeded schedule of faults and heals, and the loop that carries it out.

`schedule(seed, count, kinds)` is pure: the same seed gives the same faults on the same
nodes, so a failed run is rerun with FAULTS_SEED=<seed>. Nemesis.run applies each Fault for
`fault_s`, heals it, then lets `quiet_s` pass with every node up and every link open before
the next: the time a healed cluster has to give full service again.

Fault kinds:
- isolate: one node cut off from every other node, both ways.
- split: a minority (1 of 3, 2 of 5) cut off from the majority, both ways.
- bridge: the sides of a split do not see each other, one node sees both.
- one-way: one node's packets to the others vanish; theirs still reach it.
- kill: kill -9 one node; the heal restarts it. wipe: the same, and its data dir is deleted.
- pause: SIGSTOP one node; the heal sends SIGCONT.
- redis, postgres: the durable replica or the history store stopped; the heal starts it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from tests.faults import drops
from tests.faults.cluster import BridgeServers, FaultCluster

NETWORK_KINDS = ("isolate", "split", "bridge", "one-way")
PROCESS_KINDS = ("kill", "pause", "wipe")
SERVER_KINDS = ("redis", "postgres")
ALL_KINDS = NETWORK_KINDS + PROCESS_KINDS + SERVER_KINDS


@dataclass(frozen=True)
class Fault:
    kind: str
    target: int  # the node the fault is about (isolated, minority's first, bridge, killed...)
    pairs: drops.Pairs = frozenset()  # (receiver, sender) drops, for network kinds
    minority: frozenset[int] = frozenset()  # nodes cut off from a quorum of the others

    def describe(self, names: list[str]) -> str:
        if self.kind in SERVER_KINDS:
            return f"{self.kind} stopped"
        if self.kind == "split":
            return f"split {sorted(names[i] for i in self.minority)} | rest"
        return f"{self.kind} {names[self.target]}"


@dataclass
class Window:
    """What happened when: filled in by Nemesis.run as the schedule unfolds."""

    fault: Fault
    started: float  # monotonic
    healed: float = 0.0
    quiet_until: float = 0.0  # the next fault's start (or the end of the run)
    down: frozenset[int] = field(default_factory=frozenset)  # nodes not serving: killed, paused


def cut_off(pairs: drops.Pairs, count: int) -> frozenset[int]:
    """The nodes that cannot talk both ways with a majority of the nodes (themselves
    included): the minority side of a partition."""
    majority = count // 2 + 1

    def linked(a: int, b: int) -> bool:
        return (a, b) not in pairs and (b, a) not in pairs

    return frozenset(
        a for a in range(count) if 1 + sum(linked(a, b) for b in range(count) if b != a) < majority
    )


def make_fault(kind: str, rng: random.Random, count: int) -> Fault:
    nodes = list(range(count))
    target = rng.randrange(count)
    others = [i for i in nodes if i != target]
    if kind == "isolate":
        pairs = drops.isolate(target, count)
    elif kind == "split":
        minority = sorted(rng.sample(nodes, (count - 1) // 2))
        target = minority[0]
        pairs = drops.cut(minority, [i for i in nodes if i not in minority])
    elif kind == "bridge":
        rest = others[:]
        rng.shuffle(rest)
        pairs = drops.bridge(target, rest[: len(rest) // 2], rest[len(rest) // 2 :])
    elif kind == "one-way":
        pairs = drops.one_way([target], others)
    elif kind in PROCESS_KINDS + SERVER_KINDS:
        return Fault(kind, target)
    else:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(ALL_KINDS)}")
    return Fault(kind, target, pairs, cut_off(pairs, count))


def schedule(seed: int, count: int, kinds: tuple[str, ...]) -> list[Fault]:
    """Every kind once, in a seeded order, each on seeded nodes."""
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    return [make_fault(kind, rng, count) for kind in order]


class Nemesis:
    def __init__(
        self,
        cluster: FaultCluster,
        network_drops: drops.Drops,
        servers: BridgeServers,
        fault_s: float,
        quiet_s: float,
    ) -> None:
        self.cluster = cluster
        self.drops = network_drops
        self.servers = servers
        self.fault_s = fault_s
        self.quiet_s = quiet_s
        self.windows: list[Window] = []

    async def run(self, faults: list[Fault], log: list[str]) -> None:
        names = list(self.cluster.nodes)
        for fault in faults:
            window = Window(fault, time.monotonic(), down=self._down(fault))
            self.windows.append(window)
            log.append(f"{time.strftime('%H:%M:%S')} fault: {fault.describe(names)}")
            await self._apply(fault)
            await asyncio.sleep(self.fault_s)
            await self._heal(fault)
            window.healed = time.monotonic()
            log.append(f"{time.strftime('%H:%M:%S')} healed: {fault.describe(names)}")
            await asyncio.sleep(self.quiet_s)
            window.quiet_until = time.monotonic()

    def _down(self, fault: Fault) -> frozenset[int]:
        return frozenset({fault.target}) if fault.kind in PROCESS_KINDS else frozenset()

    async def _apply(self, fault: Fault) -> None:
        node = self.cluster.node(fault.target)
        if fault.kind in NETWORK_KINDS:
            self.drops.block(fault.pairs)
        elif fault.kind == "kill":
            node.kill()
        elif fault.kind == "wipe":
            node.wipe()
        elif fault.kind == "pause":
            node.pause()
        elif fault.kind == "redis":
            await asyncio.to_thread(self.servers.redis.stop)
        elif fault.kind == "postgres":
            await asyncio.to_thread(self.servers.postgres.stop)

    async def _heal(self, fault: Fault) -> None:
        node = self.cluster.node(fault.target)
        if fault.kind in NETWORK_KINDS:
            self.drops.heal()
        elif fault.kind in ("kill", "wipe"):
            node.restart()
        elif fault.kind == "pause":
            node.resume()
        elif fault.kind == "redis":
            await asyncio.to_thread(self.servers.redis.start)
        elif fault.kind == "postgres":
            await asyncio.to_thread(self.servers.postgres.start)

    async def heal_everything(self) -> None:
        """After a failure in the middle of a fault: open every link, resume and restart."""
        self.drops.heal()
        for node in self.cluster.nodes.values():
            if node.process is not None and node.running:
                node.resume()
        for index in range(len(self.cluster.nodes)):
            node = self.cluster.node(index)
            if not node.running:
                node.restart()
        if not self.servers.redis.running:
            await asyncio.to_thread(self.servers.redis.start)
        if not self.servers.postgres.running:
            await asyncio.to_thread(self.servers.postgres.start)

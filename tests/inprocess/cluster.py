"""InProcessCluster: several nodes in one event loop, wired by an in-memory Network.

Each node is what `node.app.assemble` builds (store, coordinator, gossip, hand-off, write-
behind, history) with a SQLite durable replica and history in its own data dir, and peer
links over the shared `Network` (network.py) instead of WebSockets; nothing listens on a
socket. The cluster starts nodes with seeds pointing at each other and waits, bounded, for
one settled ring; kills nodes (loops stopped, no final flush, cut off the network) and
restarts them with a new incarnation; admits joiners as `POST /admin/nodes` does; and at
close stops everything and fails the test if a node left a task running, logged an error,
or an exception went unretrieved.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from node.app import NodeParts, assemble
from node.base.config import Config
from node.base.errors import PeerError
from node.base.keys import Key
from node.cluster import wire
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.coordination.coordinator import Coordinator
from node.history.sqlite import SqliteHistory
from node.obs.metrics import Metrics
from node.storage.durable_sqlite import SqliteReplica
from node.storage.incarnation import start_incarnation
from node.storage.store import CounterStore
from ring import Status
from tests.inprocess.network import Network
from tests.support import eventually as support_eventually

# Small and quick: a few shards, gossip every 50 ms, a peer silent for 0.6 s is down, a
# quorum that does not answer in 0.3 s is a 504.
SETTINGS: dict[str, Any] = {
    "auth": "none",
    "shards": 16,
    "replicas": 3,
    "write_quorum": 2,
    "read_quorum": 2,
    "request_timeout_s": 0.3,
    "gossip_interval_s": 0.05,
    "failure_timeout_s": 0.6,
    "persist_interval_s": 0.05,
    "history_flush_interval_s": 0.5,
}
POLL_S = 0.01


async def eventually(
    check: Callable[[], bool], what: str, timeout: float = 5.0, show: Callable[[], object] = str
) -> None:
    """Wait until check() holds, at most `timeout` seconds (tests.support.eventually, polled
    at this cluster's pace); else fail saying what was awaited and what show() returns."""
    await support_eventually(check, what, timeout, POLL_S, show)


@dataclass
class Node:
    """One running node: its parts and its background loops."""

    node_id: str
    address: str
    parts: NodeParts
    durable: SqliteReplica
    history: SqliteHistory
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    alive: bool = True

    @property
    def coordinator(self) -> Coordinator:
        return self.parts.coordinator

    @property
    def cluster(self) -> Cluster:
        return self.parts.cluster

    @property
    def store(self) -> CounterStore:
        return self.parts.store

    def value(self, key: Key) -> int | None:
        """The counter's value in this node's memory, None if it holds no state of it."""
        state = self.store.get(key)
        return None if state is None else state.value()

    def __repr__(self) -> str:
        return f"Node({self.node_id}, {'alive' if self.alive else 'killed'})"


class InProcessCluster:
    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.network = Network(seed)
        self.nodes: dict[str, Node] = {}  # the latest incarnation of every node started
        self.settings = dict(SETTINGS)
        self._seeds: tuple[str, ...] = ()
        self._errors: list[str] = []  # error logs and unretrieved exceptions
        self._tasks_before: set[asyncio.Task[Any]] = set()
        self._previous_handler: Any = None
        self._log_handler = _ErrorRecorder(self._errors)
        self._started = False

    # -- start ------------------------------------------------------------------------------

    async def start(self, count: int, **settings: Any) -> list[Node]:
        """Start n1..n<count>, each seeded with all of them, and wait for one settled ring."""
        self._begin()
        self.settings.update(settings)
        ids = [f"n{i}" for i in range(1, count + 1)]
        self._seeds = tuple(self.address_of(node_id) for node_id in ids)
        nodes = [await self.launch(node_id) for node_id in ids]
        await self.settled()
        return nodes

    def _begin(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks_before = asyncio.all_tasks()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        for name in ("counters", "tests.inprocess"):
            logging.getLogger(name).addHandler(self._log_handler)

    def address_of(self, node_id: str) -> str:
        return f"{node_id}:7000"

    def config(self, node_id: str, seeds: Iterable[str]) -> Config:
        return Config(
            node_id=node_id,
            listen=self.address_of(node_id),
            seeds=tuple(seeds),
            data_dir=str(self.root / node_id),
            **self.settings,
        ).validate()

    async def launch(self, node_id: str, seeds: Iterable[str] | None = None) -> Node:
        """Start a node (again, if it ran before: a new incarnation, same data dir)."""
        self._begin()
        config = self.config(node_id, self._seeds if seeds is None else seeds)
        durable = SqliteReplica(config.data_path / "counters.sqlite3")
        history = SqliteHistory(config.data_path / "history.sqlite3")
        start = await start_incarnation(config.data_path, node_id, durable)
        make_pool = self.network.pool_factory(config.address)
        parts = assemble(
            config,
            start,
            durable,
            history,
            Metrics(),
            make_pool=cast(Callable[[Config, Callable[[Key], int]], PeerPool], make_pool),
        )
        await parts.history.start()
        node = Node(node_id, config.address, parts, durable, history)
        self.nodes[node_id] = node
        self.network.attach(config.address, parts.peer_server.answer)
        node.tasks = parts.tasks()
        return node

    def live(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.alive]

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until every live node is ready, holds shards, and all agree on one ring with
        no hand-off pending, every other live node seen serving."""
        await eventually(self._settled, "one settled ring", timeout, self.describe)

    def _settled(self) -> bool:
        live = self.live()
        ids = {node.node_id for node in live}
        rings = {node.cluster.state.current.checksum() for node in live}
        return len(rings) == 1 and all(
            node.cluster.ready
            and node.cluster.state.pending is None
            and ids <= set(node.cluster.state.current.nodes)
            and all(node.cluster.serving(other) for other in ids)
            for node in live
        )

    def describe(self) -> str:
        lines = []
        for node in self.nodes.values():
            cluster = node.cluster
            members = {
                m.node_id: m.status.value + ("/down" if m.node_id in cluster.down else "")
                for m in cluster.view.members.values()
            }
            lines.append(
                f"{node.node_id} alive={node.alive} ready={cluster.ready} "
                f"epoch={cluster.state.current.epoch} ring={cluster.state.current.checksum()[:8]} "
                f"pending={cluster.state.pending is not None} members={members}"
            )
        return "\n".join(lines)

    # -- faults and changes ------------------------------------------------------------------

    async def kill(self, node: Node) -> None:
        """Stop a node as a crash would: no final flush, requests to it refused."""
        node.alive = False
        await self.network.detach(node.address)
        await _cancel(node.tasks)
        await node.parts.gossip.stop()
        await node.parts.peer_server.close()
        await node.parts.pool.close()
        await node.durable.close()
        await node.history.close()

    async def restart(self, node: Node) -> Node:
        """A killed node, started again from its data dir with a new incarnation."""
        assert not node.alive, f"{node.node_id} is still running"
        return await self.launch(node.node_id, node.parts.config.seeds)

    async def admit(self, via: Node, joiner: Node) -> None:
        """What `POST /admin/nodes {address}` on `via` does: offer the joiner the cluster;
        again if the call lost the race with a gossip round of `via` that closed its link
        to the joiner, not yet a member ("peer left the cluster"), before the answer."""
        for _ in range(5):
            message = via.parts.gossip.message(None)
            message["admit"] = True
            link = via.parts.pool.link(joiner.address)
            try:
                reply = await link.call(wire.GOSSIP, message, via.parts.config.request_timeout_s)
            except PeerError:
                await asyncio.sleep(0.1)
                if via.cluster.view.get(joiner.node_id) is not None:
                    return  # it got there; only the answer was lost
                continue
            assert not reply.get("refused"), reply
            via.parts.gossip.absorb(reply)
            return
        raise AssertionError(f"{joiner.node_id} could not be admitted through {via.node_id}")

    async def pause_gossip(self, nodes: Iterable[Node] | None = None) -> None:
        """Stop gossip (and with it failure detection and hand-off) on these nodes, by
        default all: with every node paused, views stay as they are."""
        for node in self.live() if nodes is None else nodes:
            gossip = [task for task in node.tasks if task.get_name() == "gossip"]
            await _cancel(gossip)
            await node.parts.gossip.stop()
            node.tasks = [task for task in node.tasks if task not in gossip]

    def resume_gossip(self, nodes: Iterable[Node] | None = None) -> None:
        for node in self.live() if nodes is None else nodes:
            if not any(task.get_name() == "gossip" for task in node.tasks):
                node.tasks.append(asyncio.create_task(node.parts.gossip.run(), name="gossip"))

    # -- placement and state -------------------------------------------------------------------

    def key_where(
        self, wanted: Callable[[tuple[str, ...]], bool], namespace: str = "ns", tenant: str = "t"
    ) -> Key:
        """The first counter key (names k0, k1, ...) whose preference list satisfies `wanted`."""
        cluster = self.live()[0].cluster
        for i in range(10_000):
            key = (tenant, namespace, f"k{i}")
            if wanted(cluster.replicas(cluster.shard_of(key))):
                return key
        raise AssertionError("no key has such a preference list")

    def replicas(self, key: Key) -> tuple[str, ...]:
        cluster = self.live()[0].cluster
        return cluster.replicas(cluster.shard_of(key))

    async def converged(
        self, key: Key, expected: int, nodes: Iterable[Node] | None = None, timeout: float = 5.0
    ) -> None:
        """Wait until every given node (by default the key's live replicas) holds `expected`."""
        chosen = (
            [self.nodes[n] for n in self.replicas(key) if self.nodes[n].alive]
            if nodes is None
            else list(nodes)
        )
        await eventually(
            lambda: all(node.value(key) == expected for node in chosen),
            f"{key} = {expected} on {[n.node_id for n in chosen]}",
            timeout,
            lambda: {node.node_id: node.value(key) for node in chosen},
        )

    # -- teardown -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every live node cleanly; fail if anything leaked or went wrong unseen."""
        if not self._started:
            return
        try:
            for node in self.live():
                node.alive = False
                await self.network.detach(node.address)
                await node.parts.close(node.tasks)
            for _ in range(3):  # let cancelled callbacks run
                await asyncio.sleep(0)
            current = asyncio.current_task()
            leaked = [t for t in asyncio.all_tasks() - self._tasks_before if t is not current]
            for task in leaked:
                task.cancel()
            await asyncio.gather(*leaked, return_exceptions=True)
            gc.collect()  # so a never-retrieved exception is reported now, to this test
        finally:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(self._previous_handler)
            for name in ("counters", "tests.inprocess"):
                logging.getLogger(name).removeHandler(self._log_handler)
        problems = [f"task left running: {task.get_name()} {task.get_coro()}" for task in leaked]
        problems += self._errors
        problems += [f"a peer request raised {error!r}" for error in self.network.errors]
        assert not problems, "\n".join(problems)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self._errors.append(f"event loop: {context.get('message')} {context.get('exception')!r}")


class _ErrorRecorder(logging.Handler):
    """Keeps every record at error level or above, so the test that caused it fails."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"logged {record.levelname} by {record.name}: {record.getMessage()}")


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def member_status(node: Node, of: str) -> Status | None:
    member = node.cluster.view.get(of)
    return None if member is None else member.status

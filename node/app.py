"""Build the node's aiohttp application: routes, middleware and resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web

from node.base.config import Config
from node.base.keys import Key
from node.cluster.gossip import Gossip
from node.cluster.handoff import Handoff
from node.cluster.identity import Identity
from node.cluster.links import PEER_PATH
from node.cluster.membership import Cluster
from node.cluster.peer_auth import ReplayGuard
from node.cluster.pool import PeerPool
from node.cluster.slot_owners import SlotOwners
from node.coordination.coordinator import Coordinator
from node.coordination.idempotency import Idempotent
from node.coordination.quota import CounterQuota
from node.coordination.replication import Replicator
from node.coordination.rotation import ActorRotation
from node.history.backends import open_history
from node.history.model import HistoryStore
from node.history.recorder import Recorder
from node.http import (
    admin,
    auth,
    counters,
    events,
    health,
    history,
    middleware,
    openapi,
    problems,
    realtime_routes,
    topology,
    validation,
)
from node.http.appkeys import (
    CLUSTER,
    CONFIG,
    COORDINATOR,
    FANOUT,
    FEED,
    GOSSIP,
    HANDOFF,
    HISTORY,
    METRICS,
    PEER_GUARD,
    PEER_SERVER,
    PERSISTER,
    POOL,
    RATE_LIMITER,
    STORE,
    SUPERVISOR,
    TRACING,
)
from node.http.metrics import NodeCollector, handle_metrics
from node.http.metrics_realtime import RealtimeCollector
from node.http.peer_endpoint import PeerServer
from node.http.ratelimit import RateLimiter
from node.obs import logs
from node.obs.metrics import Metrics
from node.obs.supervision import Supervisor, every
from node.obs.tracing import OFF, Tracing
from node.realtime.changes import ChangeTap
from node.realtime.fanout import Fanout
from node.realtime.feed import Feed
from node.realtime.feed_metrics import FeedCollector
from node.realtime.journal import Journal
from node.realtime.service import Realtime
from node.realtime.window_file import Stored, WindowFile
from node.realtime.window_persist import WindowPersister, open_window_file
from node.storage.backends import open_durable, outlives_data_dir
from node.storage.durable import DurableReplica
from node.storage.incarnation import Start, start_incarnation
from node.storage.store import CounterStore
from node.storage.write_behind import Persister

MAX_BODY_BYTES = 1024 * 1024
GOSSIP_JITTER = 0.2  # keeps nodes started together from gossiping in lockstep
CHANGE_TURN_S = 0.1  # how often the change tap hands the store's changes on (node/realtime)
REALTIME_TURN_S = 0.5  # how often real-time state starts observing shards and catches up
WINDOW_FILE_TURN_S = 0.1  # how often the window file looks for a restore or a write due
log = logging.getLogger("counters.node")


@dataclass(frozen=True)
class NodeParts:
    """A node's working parts, wired together by `assemble`."""

    config: Config
    cluster: Cluster
    store: CounterStore
    pool: PeerPool
    persister: Persister
    handoff: Handoff
    replicator: Replicator
    quota: CounterQuota
    idempotent: Idempotent
    coordinator: Coordinator
    gossip: Gossip
    guard: ReplayGuard
    peer_server: PeerServer
    history: Recorder
    supervisor: Supervisor
    changes: ChangeTap
    realtime: Realtime
    fanout: Fanout
    feed: Feed
    window_file: WindowPersister | None  # None: windows off, or no data dir to keep them

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start the background loops, each supervised (node/obs/supervision.py): gossip
        (with hand-off), write-behind, history, the change tap, the real-time indexes'
        catch-up, the feed's publisher and, when one is configured, its event sinks."""
        gossip_pause = every(self.config.gossip_interval_s, jitter=GOSSIP_JITTER)
        supervisor = self.supervisor
        return [
            supervisor.start("gossip", self.gossip.round, gossip_pause),
            supervisor.start("persister", self.persister.flush, self.persister.next_turn),
            supervisor.start("history", self.history.flush, self.history.next_turn),
            supervisor.start("changes", self.changes.turn, every(CHANGE_TURN_S)),
            supervisor.start("realtime", self.fanout.turn, every(REALTIME_TURN_S)),
            supervisor.start("feed", self.feed.publisher.turn, every(CHANGE_TURN_S)),
            *(
                [supervisor.start("window-file", self.window_file.turn, every(WINDOW_FILE_TURN_S))]
                if self.window_file is not None
                else []
            ),
            *(
                [supervisor.start("event-sinks", self.feed.drain_sinks, every(CHANGE_TURN_S))]
                if self.feed.pumps
                else []
            ),
        ]

    async def close(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop the loops, then flush and close, so a clean stop loses nothing."""
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.gossip.stop()
        await self.peer_server.close()
        await self.feed.close()
        # Side by side: two SQLite files (or Redis and PostgreSQL), each written from its
        # own thread with the GIL released, so the last flushes take the longer of the two.
        closing = [self.persister.close(), self.history.close()]
        if self.window_file is not None:
            try:  # the last changes into the windows, then to the file
                await self.changes.turn()
            except Exception:  # what it did not hand on is a restore's tail: nothing lost
                log.exception("the change tap's last turn failed")
            closing.append(self.window_file.close())
        closed = await asyncio.gather(*closing, return_exceptions=True)
        await self.pool.close()
        for outcome in closed:
            if isinstance(outcome, BaseException):
                raise outcome


PoolFactory = Callable[[Config, Callable[[Key], int]], PeerPool]


def assemble(
    config: Config,
    start: Start,
    durable: DurableReplica,
    history_store: HistoryStore,
    node_metrics: Metrics,
    traces: Tracing = OFF,
    make_pool: PoolFactory | None = None,
    window_file: tuple[WindowFile, dict[int, Stored]] | None = None,
) -> NodeParts:
    """Wire a node's parts. `make_pool` makes its peer links (an in-memory transport in
    tests); by default, WebSocket links that report their frames to the metrics.
    `window_file`: the opened window file and what it can restore (window_persist.py)."""
    cluster = Cluster(config, start.incarnation)
    store = CounterStore(
        cluster.shard_of, int(config.idempotency_window_s * 1000), track_changes=True
    )
    if make_pool is None:
        pool = PeerPool(config, store.share, node_metrics.frame_observer)
    else:
        pool = make_pool(config, store.share)
    persister = Persister(
        store,
        durable,
        config.persist_interval_s,
        config.idempotency_window_s,
        traces,
        node_metrics.flush_seconds.observe,
        # one shared copy (Redis): each slot written once, by its owner; a copy per node
        # (SQLite): every slot it holds, else a member that restarts late keeps the only
        # copy of its slots, and the others answer and reset without them (slot_owners.py)
        SlotOwners(cluster).rule if durable.shared else None,
        config.max_persist_backlog,
    )
    identity = Identity(cluster, store, durable, start)
    handoff = Handoff(cluster, store, pool, persister, identity)
    replicator = Replicator(cluster, store, pool, persister, traces)
    quota = CounterQuota(config, cluster, store)
    rotation = ActorRotation(cluster, durable)
    idempotent = Idempotent(cluster, store, replicator, quota, rotation)
    supervisor = Supervisor()
    gossip = Gossip(cluster, store, pool, handoff, quota, supervisor)
    coordinator = Coordinator(
        cluster, store, replicator, quota, idempotent, rotation, traces, refresh_view=gossip.refresh
    )
    guard = ReplayGuard()
    shift_ms = config.realtime_clock_shift_ms

    def clock_ms() -> int:  # the real-time clock (node/realtime), shifted in tests only
        return time.time_ns() // 1_000_000 + shift_ms

    journal = Journal() if window_file is not None and config.realtime_windows else None
    realtime = Realtime(
        store,
        config.shards,
        lambda shard: cluster.node_id in cluster.replicas(shard),
        lambda: cluster.recovered,
        windows=config.realtime_windows,
        clock_ms=clock_ms,
        journal=journal,
    )
    feed = Feed(config, cluster, pool, store)
    peer_server = PeerServer(
        config,
        guard,
        store,
        coordinator,
        gossip,
        traces,
        events=feed.reader.answer,
        realtime=realtime,
    )
    history = Recorder(
        store,
        history_store,
        lambda shard: cluster.coordinator(shard) == cluster.node_id,
        flush_interval_s=config.history_flush_interval_s,
        bucket_s=config.history_bucket_s,
        tracing=traces,
    )
    changes = ChangeTap(
        store,
        cluster.shard_of,
        [realtime, feed.publisher],
        clock_ms=clock_ms,
        before_take=[realtime.watch],
    )
    return NodeParts(
        config, cluster, store, pool, persister, handoff, replicator, quota, idempotent,
        coordinator, gossip, guard, peer_server, history, supervisor, changes, realtime,
        Fanout(cluster, pool, realtime), feed,
        None if journal is None or window_file is None
        else WindowPersister(
            realtime,
            journal,
            *window_file,
            clock_ms=clock_ms,
            unpulled=lambda shard: any(shard in shards for shards in handoff.missed.values()),
        ),
    )  # fmt: skip


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    durable = open_durable(config)
    start = await start_incarnation(
        config.data_path, config.node_id, durable, outlives_data_dir(config)
    )
    node_metrics, traces = app[METRICS], app[TRACING]
    window_file = None
    if config.realtime_windows:
        now_ms = time.time_ns() // 1_000_000 + config.realtime_clock_shift_ms
        window_file = await open_window_file(config.data_path, now_ms)
    parts = assemble(
        config, start, durable, open_history(config), node_metrics, traces, window_file=window_file
    )
    app[CLUSTER], app[STORE], app[POOL] = parts.cluster, parts.store, parts.pool
    app[PERSISTER], app[HANDOFF], app[GOSSIP] = parts.persister, parts.handoff, parts.gossip
    app[COORDINATOR], app[PEER_GUARD] = parts.coordinator, parts.guard
    app[PEER_SERVER], app[HISTORY] = parts.peer_server, parts.history
    app[SUPERVISOR], app[FEED], app[FANOUT] = parts.supervisor, parts.feed, parts.fanout
    await parts.history.start()
    node_metrics.register(
        NodeCollector(
            node_metrics,
            parts.cluster,
            parts.store,
            parts.pool,
            parts.coordinator,
            parts.gossip,
            parts.handoff,
            parts.persister,
            parts.history,
            app[RATE_LIMITER],
            parts.supervisor,
        )
    )
    node_metrics.register(RealtimeCollector(parts.realtime, parts.fanout))
    node_metrics.register(FeedCollector(parts.feed))
    log.info(
        "node up",
        extra={
            "listen": config.listen,
            "address": config.address,
            "actor": parts.cluster.actor,
            "durable": durable.name,
            "durability": config.durability,
            "history": parts.history.history.name,
            "tracing": bool(config.otlp_endpoint),
        },
    )
    tasks = parts.tasks()
    yield
    await parts.close(tasks)
    await traces.shutdown()


async def _close_peer_links(app: web.Application) -> None:
    app[FEED].tally.closing.set()  # SSE streams end now, not at the shutdown timeout
    await app[PEER_SERVER].close_connections()


async def _peer_ws(request: web.Request) -> web.StreamResponse:
    return await request.app[PEER_SERVER].handle(request)


def build_app(config: Config) -> web.Application:
    authenticator = None if config.auth == "none" else auth.Authenticator(config)
    node_metrics = Metrics()
    node_tracing = Tracing.start(config.node_id, config.otlp_endpoint)
    middlewares = [middleware.edge(node_metrics, authenticator)]
    if node_tracing.tracer is not None:  # off: not even a middleware to pass through
        middlewares.append(middleware.tracing(node_tracing))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_BODY_BYTES,
        handler_args=validation.PARSER_LIMITS,
    )
    app[CONFIG] = config
    app[METRICS] = node_metrics
    app[TRACING] = node_tracing
    app[RATE_LIMITER] = RateLimiter(config)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_close_peer_links)
    modules = (counters, realtime_routes, events, topology, health, history, admin, openapi)
    for module in (*modules, problems):
        app.add_routes(module.routes)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get(PEER_PATH, _peer_ws)
    return app


def run(config: Config) -> None:
    logs.setup(config.node_id, config.log_level)
    if config.auth == "none":
        log.warning(
            "AUTHENTICATION IS OFF (--auth none): anyone who reaches %s can read, change and "
            "administer every counter. For local experiments only.",
            config.listen,
        )
    uvloop.install()
    web.run_app(
        build_app(config),
        host=config.host,
        port=config.port,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
    )
    # A clean stop: everything is flushed and closed. Left to the interpreter, freeing a
    # million counters' objects one by one took seconds of the orchestrator's grace period.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

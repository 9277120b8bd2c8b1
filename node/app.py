"""Build the node's aiohttp application: routes, middleware and resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvloop
from aiohttp import web

from node import (
    admin,
    api,
    auth,
    edge,
    history_api,
    logs,
    metrics,
    openapi,
    peer_auth,
    tracing,
    validation,
)
from node.appkeys import (
    CLUSTER,
    CONFIG,
    COORDINATOR,
    GOSSIP,
    HANDOFF,
    HISTORY,
    PEER_GUARD,
    PERSISTER,
    POOL,
    RATE_LIMITER,
    STORE,
)
from node.cluster import Cluster
from node.config import Config
from node.coordinator import Coordinator
from node.durable import DurableError, DurableReplica, open_durable
from node.gossip import Gossip
from node.handoff import Handoff
from node.history import Recorder, open_history
from node.incarnation import next_incarnation
from node.peer_server import PeerServer
from node.peers import PEER_PATH, PeerPool
from node.persistence import Persister
from node.ratelimit import RateLimiter
from node.store import CounterStore

PEER_SERVER = web.AppKey("peer_server", PeerServer)
TRACING = web.AppKey("tracing", tracing.Tracing)
MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("counters.node")


async def _incarnation(config: Config, durable: DurableReplica) -> int:
    """The next incarnation: from the data dir, and above any the durable replica knows of."""
    incarnation = next_incarnation(config.data_path)
    try:
        known = await durable.last_incarnation(config.node_id, incarnation)
    except DurableError as error:
        log.warning(
            "durable replica unreachable at start, incarnation from the data dir: %s", error
        )
        return incarnation
    if known >= incarnation:  # the data dir was lost or is older: never reuse an actor id
        incarnation = next_incarnation(config.data_path, at_least=known + 1)
        with contextlib.suppress(DurableError):  # the data dir has it; the store may lag
            await durable.last_incarnation(config.node_id, incarnation)
    return incarnation


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    durable = open_durable(config)
    incarnation = await _incarnation(config, durable)
    cluster = Cluster(config, incarnation)
    store = CounterStore(cluster.shard_of)
    pool = PeerPool(config, store.share, cluster.actor)
    traces = app[TRACING]
    persister = Persister(
        store, durable, config.persist_interval_s, config.idempotency_window_s, traces
    )
    handoff = Handoff(cluster, store, pool, persister)
    coordinator = Coordinator(cluster, store, pool, persister, traces)
    gossip = Gossip(cluster, store, pool, handoff, coordinator.quota)
    app[CLUSTER], app[STORE], app[POOL], app[PERSISTER] = cluster, store, pool, persister
    app[HANDOFF], app[GOSSIP], app[COORDINATOR] = handoff, gossip, coordinator
    app[PEER_GUARD] = guard = peer_auth.ReplayGuard()
    app[PEER_SERVER] = PeerServer(config, guard, store, coordinator, gossip, traces)
    history = app[HISTORY] = Recorder(
        store,
        open_history(config),
        lambda shard: cluster.coordinator(shard) == cluster.node_id,
        flush_interval_s=config.history_flush_interval_s,
        bucket_s=config.history_bucket_s,
        tracing=traces,
    )
    await history.start()
    app[metrics.METRICS].watch(app)
    log.info(
        "node up",
        extra={
            "listen": config.listen,
            "address": config.address,
            "actor": cluster.actor,
            "durable": persister.durable.name,
            "durability": config.durability,
            "history": history.history.name,
            "tracing": bool(config.otlp_endpoint),
        },
    )
    tasks = [
        asyncio.create_task(gossip.run(), name="gossip"),
        asyncio.create_task(persister.run(), name="persister"),
        asyncio.create_task(history.run(), name="history"),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await gossip.stop()
    await app[PEER_SERVER].close()
    await persister.close()
    await history.close()
    await pool.close()
    await traces.shutdown()


async def _close_peer_links(app: web.Application) -> None:
    await app[PEER_SERVER].close_connections()


async def _peer_ws(request: web.Request) -> web.StreamResponse:
    return await request.app[PEER_SERVER].handle(request)


def build_app(config: Config) -> web.Application:
    authenticator = None if config.auth == "none" else auth.Authenticator(config)
    node_metrics = metrics.Metrics()
    node_tracing = tracing.Tracing.start(config.node_id, config.otlp_endpoint)
    middlewares = [edge.middleware(node_metrics, authenticator)]
    if node_tracing.tracer is not None:  # off: not even a middleware to pass through
        middlewares.append(tracing.middleware(node_tracing))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_BODY_BYTES,
        handler_args=validation.PARSER_LIMITS,
    )
    app[CONFIG] = config
    app[metrics.METRICS] = node_metrics
    app[TRACING] = node_tracing
    app[RATE_LIMITER] = RateLimiter(config)
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_close_peer_links)
    app.add_routes(api.routes)
    app.add_routes(history_api.routes)
    app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    app.router.add_get("/metrics", metrics.handle_metrics)
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

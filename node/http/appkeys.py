"""Typed application keys: the node's resources, created in cleanup contexts (app.py)."""

from __future__ import annotations

from aiohttp import web

from node.base.config import Config
from node.cluster.gossip import Gossip
from node.cluster.handoff import Handoff
from node.cluster.membership import Cluster
from node.cluster.peer_auth import ReplayGuard
from node.cluster.pool import PeerPool
from node.coordination.coordinator import Coordinator
from node.history.recorder import Recorder
from node.http.peer_endpoint import PeerServer
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from node.obs.supervision import Supervisor
from node.obs.tracing import Tracing
from node.realtime.fanout import Fanout
from node.realtime.feed import Feed
from node.storage.store import CounterStore
from node.storage.write_behind import Persister

CONFIG = web.AppKey("config", Config)
CLUSTER = web.AppKey("cluster", Cluster)
STORE = web.AppKey("store", CounterStore)
POOL = web.AppKey("pool", PeerPool)
COORDINATOR = web.AppKey("coordinator", Coordinator)
GOSSIP = web.AppKey("gossip", Gossip)
HANDOFF = web.AppKey("handoff", Handoff)
PERSISTER = web.AppKey("persister", Persister)
PEER_GUARD = web.AppKey("peer_guard", ReplayGuard)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
HISTORY = web.AppKey("history", Recorder)
METRICS = web.AppKey("metrics", Metrics)
TRACING = web.AppKey("tracing", Tracing)
PEER_SERVER = web.AppKey("peer_server", PeerServer)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
FANOUT = web.AppKey("fanout", Fanout)
FEED = web.AppKey("feed", Feed)

"""Typed application keys: the node's resources, created in cleanup contexts (app.py)."""

from __future__ import annotations

from aiohttp import web

from node.cluster import Cluster
from node.config import Config
from node.coordinator import Coordinator
from node.gossip import Gossip
from node.handoff import Handoff
from node.history import Recorder
from node.peer_auth import ReplayGuard
from node.peers import PeerPool
from node.persistence import Persister
from node.ratelimit import RateLimiter
from node.store import CounterStore

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

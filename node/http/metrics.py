"""GET /metrics, and the collector that reads the node's parts when Prometheus scrapes.

The parts count what they do in plain attributes (node/obs/metrics.py says why); this
collector, given those parts when the node is built, turns them into metric families.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node.cluster.gossip import Gossip
from node.cluster.handoff import Handoff
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.coordination.coordinator import Coordinator
from node.history.recorder import Recorder
from node.http import health
from node.http.appkeys import CONFIG, METRICS
from node.http.auth import Unauthorized
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from node.obs.supervision import Supervisor
from node.storage.store import CounterStore
from node.storage.write_behind import Persister


async def handle_metrics(request: web.Request) -> web.Response:
    token = request.app[CONFIG].metrics_token
    if token:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        # surrogateescape: header bytes that are not UTF-8 are a wrong token, not a 500
        if not hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode()):
            raise Unauthorized("/metrics needs Authorization: Bearer <the --metrics-token>")
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


@dataclass(eq=False)  # registered in a set: hashed by identity
class NodeCollector:
    """Reads the node's own tallies at scrape time."""

    metrics: Metrics
    cluster: Cluster
    store: CounterStore
    pool: PeerPool
    coordinator: Coordinator
    gossip: Gossip
    handoff: Handoff
    persister: Persister
    history: Recorder
    rate_limiter: RateLimiter
    supervisor: Supervisor

    def __post_init__(self) -> None:
        self._checksum: tuple[object, int] = (None, 0)

    def collect(self) -> Iterator[Metric]:
        peer_names = {m.address: m.node_id for m in self.cluster.view.members.values()}
        yield from self.metrics.families(peer_names)
        yield from self._operations()
        yield from self._peers(peer_names)
        yield from self._gossip()
        yield from self._storage()
        yield from self._ring()
        yield from self._loops()

    def _operations(self) -> Iterator[Metric]:
        coordinator = self.coordinator
        operations = CounterMetricFamily(
            "counters_operations", "Operations applied on this node, by kind.", labels=["kind"]
        )
        for kind, count in coordinator.applied.items():
            operations.add_metric([kind], count)
        yield operations
        failures = CounterMetricFamily(
            "counters_quorum_failures",
            "Client operations refused (unavailable) or timed out for want of replicas.",
            labels=["reason"],
        )
        for reason, count in coordinator.quorum_failures.items():
            failures.add_metric([reason], count)
        yield failures
        yield _counter(
            "counters_idempotency_hits",
            "Retries answered from an idempotency receipt, applying nothing.",
            coordinator.idempotent.hits,
        )
        yield _counter(
            "counters_idempotency_in_doubt",
            "Keyed ops answered 503 in-doubt: an earlier attempt's holder could not be asked.",
            coordinator.idempotent.fence.in_doubt,
        )
        limited = CounterMetricFamily(
            "counters_rate_limited",
            "Requests refused with 429 because the tenant was over its rate.",
            labels=["tenant"],
        )
        for tenant, count in self.rate_limiter.limited.items():
            limited.add_metric([tenant], count)
        yield limited

    def _peers(self, peer_names: dict[str, str]) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "counters_replication_frames",
            "Replication frames (slots, states, reads) written, per peer.",
            labels=["peer"],
        )
        for link in self.pool.links():
            frames.add_metric([peer_names.get(link.address, link.address)], link.frames_sent)
        yield frames
        heard = GaugeMetricFamily(
            "counters_peer_last_heard_seconds",
            "Seconds since this node last heard from each peer.",
            labels=["peer"],
        )
        now = time.monotonic()
        for member in self.cluster.peers():
            last = self.cluster.detector.last_heard(member.node_id)
            if last is not None:
                heard.add_metric([member.node_id], max(0.0, now - last))
        yield heard

    def _gossip(self) -> Iterator[Metric]:
        gossip = self.gossip
        yield _counter("counters_gossip_rounds", "Gossip rounds run.", gossip.rounds)
        yield _counter(
            "counters_divergent_shards",
            "Shared shards whose digests differed when a peer compared them with ours.",
            gossip.divergent_shards,
        )
        yield _counter(
            "counters_deferred_shards",
            "Shared shards whose digests differed but that changed lately here: their "
            "comparison with that peer waited for a later exchange (in flight, not lost).",
            gossip.deferred_shards,
        )
        yield _counter(
            "counters_repaired_keys",
            "Counters pushed to a peer by anti-entropy.",
            gossip.repaired_keys,
        )
        yield _gauge(
            "counters_pending_handoffs",
            "Shard moves of a pending ring not yet acknowledged.",
            len(self.handoff.pending_moves()),
        )

    def _storage(self) -> Iterator[Metric]:
        yield _gauge(
            "counters_persistence_backlog",
            "Changed counters waiting to be written to the durable replica.",
            self.persister.backlog,
        )
        yield _counter(
            "counters_persistence_flush_failures",
            "Flushes to the durable replica that failed.",
            self.persister.flush_failures,
        )
        yield _counter(
            "counters_persistence_backlog_waits",
            "Acknowledgements held until the write-behind backlog fell below its bound.",
            self.persister.pressure_waits,
        )
        history = self.history.status()
        yield _gauge(
            "counters_history_lag_seconds",
            "Age of the oldest counter value waiting to be written to the history.",
            history["write_lag_s"],
        )
        yield _gauge(
            "counters_history_pending",
            "Counter values waiting to be written to the history.",
            history["buffered"],
        )
        yield _gauge(
            "counters_durable_replica_up",
            "1 while the durable replica answers; 0 during an outage (async writes go on, "
            "the backlog grows; sync writes are refused).",
            float(self.persister.healthy),
        )
        yield _gauge(
            "counters_history_store_up",
            "1 while the history store answers; 0 during an outage (values wait in a buffer).",
            float(self.history.healthy),
        )
        yield _gauge("counters_store_counters", "Counters held in memory.", len(self.store))
        yield _gauge(
            "counters_store_unweighed_shards",
            "Shards whose loaded counters still wait for their digest weights (after a start).",
            self.store.unweighed(),
        )
        yield _gauge(
            "counters_idempotency_receipts",
            "Idempotency receipts held in memory (those of the window).",
            self.store.receipt_count(),
        )
        yield _gauge(
            "counters_idempotency_reservations",
            "Idempotency keys reserved by an attempt that has no receipt yet.",
            self.store.reservations.reservation_count(),
        )

    def _ring(self) -> Iterator[Metric]:
        cluster = self.cluster
        ring = cluster.state.current
        yield _gauge("counters_ring_epoch", "Epoch of the ring this node serves.", ring.epoch)
        if self._checksum[0] is not ring:
            self._checksum = (ring, int(ring.checksum()[:8], 16))
        yield _gauge(
            "counters_ring_checksum",
            "First 32 bits of the ring's checksum: nodes that differ see different rings.",
            self._checksum[1],
        )
        members = GaugeMetricFamily(
            "counters_ring_members", "Members this node knows, by status.", labels=["status"]
        )
        statuses: dict[str, int] = {}
        for member in cluster.view.members.values():
            statuses[member.status.value] = statuses.get(member.status.value, 0) + 1
        for status, count in sorted(statuses.items()):
            members.add_metric([status], count)
        yield members
        reasons, _ = health.assess(cluster, self.persister, self.history, self.supervisor)
        yield _gauge(
            "counters_node_ready",
            "1 when this node serves requests (/readyz answers 200).",
            float(not reasons),
        )

    def _loops(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "counters_loop_errors",
            "Unexpected errors in a background loop's turns (it logs, backs off, carries on).",
            labels=["loop"],
        )
        failing = GaugeMetricFamily(
            "counters_loop_failing",
            "1 while a background loop's turns keep failing, 0 once one succeeds.",
            labels=["loop"],
        )
        for name, loop in sorted(self.supervisor.loops.items()):
            errors.add_metric([name], loop.errors)
            failing.add_metric([name], float(loop.failing))
        yield errors
        yield failing

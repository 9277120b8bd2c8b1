"""Prometheus metrics at GET /metrics; every family is named counters_*.

Requests, peer frames and flushes are tallied as they happen, in plain integers: the node
runs on one event loop, so it needs none of prometheus-client's locks, which cost a read
about 7% of a node's throughput when every request took them (measured with
loadtest/bench.py). Everything else (operations applied, quorum failures, gossip,
hand-offs, backlogs, the ring, the store) is already counted by the part that does the
work. A collector turns all of it into metric families when Prometheus scrapes, and
prometheus-client writes the exposition. Each app has its own registry.
"""

from __future__ import annotations

import bisect
import hmac
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node import appkeys
from node.auth import PRINCIPAL, Unauthorized

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "unmatched"  # the route label of requests that matched no route (404s)


class Histogram:
    """Observations of one label set: a count per latency bucket (the last is +Inf), a sum."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        family.add_metric(labels, cumulative, self.sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, int, str], int] = {}  # (route, method, status, tenant)
        self.request_seconds: dict[tuple[str, str, str], Histogram] = {}  # (route, method, tenant)
        self.frame_seconds: dict[str, Histogram] = {}  # replication frames, per peer address
        self.flush_seconds = Histogram()

    def watch(self, app: web.Application) -> None:
        """Observe the node's parts (once they exist: called from the app's cleanup ctx)."""
        app[appkeys.POOL].frame_observer = self._frame_observer
        app[appkeys.PERSISTER].observe_flush = self.flush_seconds.observe
        self.registry.register(_NodeCollector(app, self))

    def _frame_observer(self, peer: str) -> Histogram:
        return self.frame_seconds.setdefault(peer, Histogram())

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        resource = request.match_info.route.resource
        route = UNMATCHED if resource is None else resource.canonical
        principal = request.get(PRINCIPAL)
        tenant = "" if principal is None else principal.tenant
        method = request.method
        key = (route, method, status, tenant)
        self.requests[key] = self.requests.get(key, 0) + 1
        latency = self.request_seconds.get((route, method, tenant))
        if latency is None:
            latency = self.request_seconds[(route, method, tenant)] = Histogram()
        latency.observe(seconds)

    def families(self, peer_names: dict[str, str]) -> Iterator[Metric]:
        """What was tallied here, as metric families; peers named by node id where known
        (peer_names: address -> node id)."""
        requests = CounterMetricFamily(
            "counters_http_requests",
            "HTTP requests answered, by route template, method, status and tenant.",
            labels=["route", "method", "status", "tenant"],
        )
        for (route, method, status, tenant), count in self.requests.items():
            requests.add_metric([route, method, str(status), tenant], count)
        yield requests
        latency = HistogramMetricFamily(
            "counters_http_request_duration_seconds",
            "Seconds from receiving an HTTP request to its answer.",
            labels=["route", "method", "tenant"],
        )
        for labels, histogram in self.request_seconds.items():
            histogram.add_to(latency, list(labels))
        yield latency
        frames = HistogramMetricFamily(
            "counters_replication_frame_seconds",
            "Seconds from writing a replication frame (slots, states, reads) to its reply.",
            labels=["peer"],
        )
        for peer, histogram in self.frame_seconds.items():
            histogram.add_to(frames, [peer_names.get(peer, peer)])
        yield frames
        flushes = HistogramMetricFamily(
            "counters_persistence_flush_seconds",
            "Seconds one write-behind flush to the durable replica took.",
        )
        self.flush_seconds.add_to(flushes, [])
        yield flushes

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


async def handle_metrics(request: web.Request) -> web.Response:
    token = request.app[appkeys.CONFIG].metrics_token
    if token:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise Unauthorized("/metrics needs Authorization: Bearer <the --metrics-token>")
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


class _NodeCollector:
    """Reads the node's own tallies at scrape time."""

    def __init__(self, app: web.Application, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._checksum: tuple[object, int] = (None, 0)

    def collect(self) -> Iterator[Metric]:
        app = self.app
        cluster, coordinator = app[appkeys.CLUSTER], app[appkeys.COORDINATOR]
        peer_names = {m.address: m.node_id for m in cluster.view.members.values()}
        yield from self.metrics.families(peer_names)
        gossip, persister = app[appkeys.GOSSIP], app[appkeys.PERSISTER]

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
        limited = CounterMetricFamily(
            "counters_rate_limited",
            "Requests refused with 429 because the tenant was over its rate.",
            labels=["tenant"],
        )
        for tenant, count in app[appkeys.RATE_LIMITER].limited.items():
            limited.add_metric([tenant], count)
        yield limited

        frames = CounterMetricFamily(
            "counters_replication_frames",
            "Replication frames (slots, states, reads) written, per peer.",
            labels=["peer"],
        )
        for link in app[appkeys.POOL].links():
            frames.add_metric([peer_names.get(link.address, link.address)], link.frames_sent)
        yield frames
        heard = GaugeMetricFamily(
            "counters_peer_last_heard_seconds",
            "Seconds since this node last heard from each peer.",
            labels=["peer"],
        )
        now = time.monotonic()
        for member in cluster.peers():
            last = cluster.detector.last_heard(member.node_id)
            if last is not None:
                heard.add_metric([member.node_id], max(0.0, now - last))
        yield heard

        yield _counter("counters_gossip_rounds", "Gossip rounds run.", gossip.rounds)
        yield _counter(
            "counters_divergent_shards",
            "Shared shards whose digests differed when a peer compared them with ours.",
            gossip.divergent_shards,
        )
        yield _counter(
            "counters_repaired_keys",
            "Counters pushed to a peer by anti-entropy.",
            gossip.repaired_keys,
        )
        yield _gauge(
            "counters_pending_handoffs",
            "Shard moves of a pending ring not yet acknowledged.",
            len(app[appkeys.HANDOFF].pending_moves()),
        )

        yield _gauge(
            "counters_persistence_backlog",
            "Changed counters waiting to be written to the durable replica.",
            persister.backlog,
        )
        yield _counter(
            "counters_persistence_flush_failures",
            "Flushes to the durable replica that failed.",
            persister.flush_failures,
        )
        history = app[appkeys.HISTORY].status()
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
        yield _gauge("counters_store_counters", "Counters held in memory.", len(app[appkeys.STORE]))
        yield _gauge(
            "counters_node_ready", "1 when this node serves requests.", float(cluster.ready)
        )

"""Prometheus metrics: the tallies kept as things happen, and their families.

Requests, peer frames and flushes are tallied as they happen, in plain integers: the node
runs on one event loop, so it needs none of prometheus-client's locks, which cost a read
about 7% of a node's throughput when every request took them (measured with
loadtest/bench.py). Everything else (operations applied, quorum failures, gossip,
hand-offs, backlogs, the ring, the store) is already counted by the part that does the
work; node/http/metrics.py turns all of it into metric families when Prometheus scrapes,
and prometheus-client writes the exposition. Each app has its own registry. Every family
is named counters_*.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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

    def register(self, collector: Collector) -> None:
        """Add a collector whose families every scrape reads (the node's parts)."""
        self.registry.register(collector)

    def frame_observer(self, peer: str) -> Callable[[float], None]:
        """What a peer link calls with the seconds from a replication frame to its reply."""
        return self.frame_seconds.setdefault(peer, Histogram()).observe

    def observe_request(
        self, route: str, method: str, status: int, tenant: str, seconds: float
    ) -> None:
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

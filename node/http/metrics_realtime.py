"""The real-time reads' metric families (issue 14), read from their parts at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.realtime.fanout import Fanout
from node.realtime.service import Realtime


@dataclass(eq=False)  # registered in a set: hashed by identity
class RealtimeCollector:
    realtime: Realtime
    fanout: Fanout

    def collect(self) -> Iterator[Metric]:
        realtime = self.realtime
        queries = CounterMetricFamily(
            "counters_realtime_queries",
            "Real-time queries this node answered about its shards, by kind.",
            labels=["kind"],
        )
        for kind, count in realtime.queries.items():
            queries.add_metric([kind.value], count)
        yield queries
        yield CounterMetricFamily(
            "counters_realtime_requests",
            "Requests real-time reads sent to nodes (this one included), retries too.",
            value=self.fanout.rounds,
        )
        yield CounterMetricFamily(
            "counters_realtime_kept_answers",
            "Real-time queries answered from a kept answer (nothing it read had changed).",
            value=realtime.kept_answers,
        )
        yield CounterMetricFamily(
            "counters_realtime_shard_rebuilds",
            "Shards indexed afresh from the store (loads, hand-off arrivals, drops).",
            value=realtime.rebuilds,
        )
        yield GaugeMetricFamily(
            "counters_realtime_indexed_counters",
            "Counters in the namespace indexes in use (prefix aggregates, top by value).",
            value=realtime.index.indexed(),
        )
        journal = realtime.journal
        yield GaugeMetricFamily(
            "counters_realtime_restoring_shards",
            "Shards whose windows wait to be restored from the window file (after a start).",
            value=0 if journal is None else len(journal.restoring),
        )
        yield GaugeMetricFamily(
            "counters_realtime_observed_shards",
            "Shards whose changes this node observes (windows it can answer).",
            value=len(realtime.since),
        )
        windows = realtime.windows
        yield GaugeMetricFamily(
            "counters_realtime_window_entries",
            "(counter, minute) entries of the windows held: ~34 bytes each, names interned.",
            value=0 if windows is None else windows.entries(),
        )

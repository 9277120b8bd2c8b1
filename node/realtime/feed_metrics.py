"""The change feed's metrics, read from its parts when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from node.realtime.feed import Feed


@dataclass(eq=False)  # registered in a set: hashed by identity
class FeedCollector:
    feed: Feed

    def collect(self) -> Iterator[Metric]:
        feed, publisher, tally = self.feed, self.feed.publisher, self.feed.tally
        published = CounterMetricFamily(
            "counters_events_published",
            "Change events published: into this node's log, and taken by each sink",
            labels=["sink"],
        )
        published.add_metric(["log"], publisher.published)
        for pump in feed.pumps:
            published.add_metric([pump.sink.name], pump.published)
        yield published
        yield CounterMetricFamily(
            "counters_events_replayed",
            "Events republished by this node on taking a shard over (at least once)",
            value=publisher.replayed,
        )
        yield GaugeMetricFamily(
            "counters_events_log_events", "Events this node's feed log holds", value=len(feed.log)
        )
        yield CounterMetricFamily(
            "counters_events_log_trimmed",
            "Events dropped from the log by retention",
            value=feed.log.trimmed,
        )
        yield GaugeMetricFamily(
            "counters_events_streams", "SSE change streams open on this node", value=tally.active
        )
        yield CounterMetricFamily(
            "counters_events_consumers_dropped",
            "SSE streams cut off because the client stopped reading",
            value=tally.cut_off,
        )
        yield CounterMetricFamily(
            "counters_events_gaps",
            "Gap events sent (a position past a log's retention)",
            value=tally.gaps,
        )
        yield CounterMetricFamily(
            "counters_events_streamed", "Change events sent on SSE streams", value=tally.sent
        )
        yield CounterMetricFamily(
            "counters_events_stale",
            "Events an SSE stream here did not send: an older state of a counter than one it sent",
            value=tally.stale,
        )
        lag = HistogramMetricFamily(
            "counters_events_stream_lag_seconds",
            "From an event's publication (on any node) to an SSE stream here sending it",
        )
        tally.lag.add_to(lag, [])
        yield lag
        yield from self._sinks()

    def _sinks(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "counters_events_sink_backlog", "Events waiting for a sink", labels=["sink"]
        )
        lag = GaugeMetricFamily(
            "counters_events_sink_lag_seconds",
            "Age of the oldest event waiting for a sink (0: none waits)",
            labels=["sink"],
        )
        dropped = CounterMetricFamily(
            "counters_events_sink_dropped",
            "Events dropped because a sink's backlog was full",
            labels=["sink"],
        )
        up = GaugeMetricFamily(
            "counters_events_sink_up", "1 while the sink takes events", labels=["sink"]
        )
        for pump in self.feed.pumps:
            name = [pump.sink.name]
            backlog.add_metric(name, len(pump.backlog))
            lag.add_metric(name, pump.lag_ms() / 1000)
            dropped.add_metric(name, pump.dropped)
            up.add_metric(name, 1 if pump.healthy else 0)
        yield from (backlog, lag, dropped, up)

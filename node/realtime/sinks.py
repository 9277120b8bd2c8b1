"""Events to other systems: a small sink interface and the pump that feeds one.

A sink (`EventSink`) takes batches of published events and raises `SinkError` when it
cannot; Redis Streams is the one here (sink_redis.py), and a Kafka sink (aiokafka) needs
only `publish` and `close`. The node keeps serving when a sink is down: the publisher
offers events to the sink's `SinkPump`, which holds them in a bounded backlog (the oldest
are dropped past `capacity`, and counted) and hands them on from a supervised loop,
retrying what failed at the next turn. Its state is in the metrics and in /readyz's body
("degraded"), never a reason to fail readiness: counting goes on without the sink.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, Protocol

from node.realtime.feed_log import Event

log = logging.getLogger("counters.events")
BATCH = 1000  # events per publish call
DEFAULT_BACKLOG = 100_000


class SinkError(Exception):
    """The sink could not take a batch; the pump keeps it and tries again."""


class EventSink(Protocol):
    name: str

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver the batch, in order, or raise SinkError."""

    async def close(self) -> None: ...


class SinkPump:
    """A sink's bounded backlog and the loop turn that drains it."""

    def __init__(
        self,
        sink: EventSink,
        capacity: int = DEFAULT_BACKLOG,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.sink = sink
        self.capacity = capacity
        self.clock_ms = clock_ms
        self.backlog: deque[Event] = deque()
        self.published = 0
        self.dropped = 0  # events lost to the capacity bound since the start
        self.failures = 0
        self.healthy = True
        self.last_error = ""
        self.unhealthy_since: float | None = None
        self.last_lag_ms = 0  # from an event's publication in the log to the sink's ack

    def offer(self, events: Sequence[Event]) -> None:
        backlog = self.backlog
        backlog.extend(events)
        over = len(backlog) - self.capacity
        for _ in range(max(0, over)):
            backlog.popleft()
        self.dropped += max(0, over)

    def lag_ms(self, now_ms: int | None = None) -> int:
        """How long the oldest waiting event has waited (0 when none waits)."""
        if not self.backlog:
            return 0
        return max(0, (self.clock_ms() if now_ms is None else now_ms) - self.backlog[0].at_ms)

    async def drain(self) -> None:
        """Hand the backlog on, a batch at a time, until it is empty or the sink fails."""
        while self.backlog:
            batch = list(islice(self.backlog, BATCH))
            dropped_before = self.dropped
            try:
                await self.sink.publish(batch)
            except SinkError as error:
                self._failed(str(error))
                return
            # events dropped meanwhile came off the front, which this batch was
            for _ in range(max(0, len(batch) - (self.dropped - dropped_before))):
                self.backlog.popleft()
            self.published += len(batch)
            self.last_lag_ms = max(0, self.clock_ms() - batch[-1].at_ms)
            if not self.healthy:
                log.warning("event sink %s is back (%d waiting)", self.sink.name, len(self.backlog))
            self.healthy, self.unhealthy_since = True, None

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.healthy:
            log.warning("event sink %s failing, events wait: %s", self.sink.name, error)
            self.healthy, self.unhealthy_since = False, time.time()

    def status(self) -> dict[str, Any]:
        return {
            "sink": self.sink.name,
            "healthy": self.healthy,
            "backlog": len(self.backlog),
            "capacity": self.capacity,
            "dropped": self.dropped,
            "published": self.published,
            "last_error": self.last_error,
        }

    def degraded(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.unhealthy_since or 0))
        return (
            f"event sink {self.sink.name} degraded: backlog {len(self.backlog)} of "
            f"{self.capacity}, {self.dropped} dropped, since {since} ({self.last_error})"
        )

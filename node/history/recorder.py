"""The loop that records each changed counter's value per time bucket into the history.

The first live replica of a shard (its coordinator) records the shard's counters: every
`history_flush_interval_s` the recorder takes the counters changed since its last turn, drops
those of shards this node does not coordinate, and files each value under the bucket of the
flush time, `floor(now / bucket_s) * bucket_s`. A shard this node records now and did not at
its last turn (the first turn after a start included) has every counter recorded once: the
node that recorded it before may have died, or handed it back, with changes it had not
recorded yet, which this node's replicas saw but dropped as not theirs to record. So the
history's last value of a counter is its value whatever node died; the cost is a row per
counter of such shards (a node's start records each counter it coordinates once).

Values wait in a bounded buffer keyed by (counter, bucket), so a counter that changes many
times in a bucket costs one entry, and an outage of the history store costs memory bounded
by counters x buckets (capped; the oldest buckets go first). Every flush retries what
waits, in transactions of at most `write_batch` rows: halved after a write that timed out,
grown back by a quarter after each full one, so a store slower than its timeout allows
(a long backlog after an outage) still drains, in smaller transactions. A turn takes the
changed counters, and trims a full buffer, in parts of about RECORD_CHUNK entries with a
yield to the event loop between them: a million changed counters in one interval cost
seconds of CPU, which must not hold the node's requests and peer links meanwhile. The store
and its rules: model.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

from crdt import saturate
from crdt.pncounter import INT64_MAX
from node.base.keys import Key
from node.history.model import HistoryError, HistoryStore, HistoryTimeout, Row, bucket_of
from node.obs.tracing import OFF, Tracing
from node.storage.store import CounterStore

log = logging.getLogger("counters.history")
MAX_BUFFERED = 1_000_000  # (counter, bucket) values kept while the store is unreachable
# Rows per write (one transaction), so a long backlog drains in pieces. Large: on a table
# of a million counters a transaction of 5,000 random rows cost SQLite 20 us of CPU per
# row and one of 300,000 cost 5 (each touched page is written once per transaction), and
# a SIGTERM's last flush of a million counters' values took 10 s in 5,000-row pieces.
WRITE_BATCH = 100_000
MIN_WRITE_BATCH = 1_000  # the least a write shrinks to after timeouts
# Entries a turn takes or trims between two yields to the event loop: a few tens of ms.
RECORD_CHUNK = 20_000


def next_write_batch(batch: int, rows: int, timed_out: bool) -> int:
    """The most rows the next write takes, after a write of `rows` rows under a limit of
    `batch`: half as many after a timeout (at least MIN_WRITE_BATCH), a quarter more after a
    full write that succeeded (at most WRITE_BATCH), else the same. Growing slowly, the limit
    does not bounce back onto the size that timed out at every other write."""
    if timed_out:
        return max(MIN_WRITE_BATCH, min(batch, rows) // 2)
    if rows >= batch:
        return min(WRITE_BATCH, batch + batch // 4)
    return batch


class HistoryBuffer:
    """Values recorded but not yet written: (counter, bucket) -> (value, recorded_at, version).

    Bounded by `capacity` entries; past it, values a newer bucket of the same counter
    supersedes go first (oldest buckets first), so every counter keeps its latest value;
    then, if that is not enough, the oldest buckets, since a bucket's value is worth less
    the older it is and newer buckets hold the latest values.
    """

    def __init__(self, capacity: int = MAX_BUFFERED) -> None:
        self.capacity = capacity
        self.dropped = 0  # entries lost to the cap since the start
        self._buckets: dict[int, dict[Key, tuple[int, float, int]]] = {}
        self._since: dict[int, float] = {}  # per bucket: when it first got a waiting value
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, key: Key, bucket: int, value: int, recorded_at: float, version: int) -> None:
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = {}
            self._since[bucket] = recorded_at
        if key not in entries:
            self._size += 1
        entries[key] = (value, recorded_at, version)

    def trim(self) -> int:
        """Drop entries until the buffer fits (see the class); returns how many."""
        before = self.dropped
        for _ in self.trimming():
            pass
        return self.dropped - before

    def trimming(self) -> Iterator[None]:
        """trim() in steps of about RECORD_CHUNK entries, for a caller that yields to the
        event loop between them (a full buffer's trim costs about a second); nothing else
        may change the buffer until the steps are done."""
        if self._size <= self.capacity:
            return
        yield from self._drop_superseded(self._size - self.capacity)
        while self._size > self.capacity:
            oldest = min(self._buckets)
            entries = self._buckets[oldest]
            excess = self._size - self.capacity
            if len(entries) <= excess:
                del self._buckets[oldest], self._since[oldest]
                gone = len(entries)
            else:
                gone = min(excess, RECORD_CHUNK)
                for key in list(islice(entries, gone)):
                    del entries[key]
            self._size -= gone
            self.dropped += gone
            yield

    def _drop_superseded(self, excess: int) -> Iterator[None]:
        newer: set[Key] = set()
        superseded: list[tuple[int, Key]] = []
        for bucket in sorted(self._buckets, reverse=True):
            keys = iter(self._buckets[bucket])
            # a bucket holds each key once, so a part's keys join `newer` before the rest's
            # are checked without changing what is superseded
            while part := list(islice(keys, RECORD_CHUNK)):
                superseded.extend((bucket, key) for key in part if key in newer)
                newer.update(part)
                yield
        del superseded[: max(0, len(superseded) - excess)]  # keep the oldest `excess`
        superseded.reverse()  # oldest buckets first
        for start in range(0, len(superseded), RECORD_CHUNK):
            for bucket, key in superseded[start : start + RECORD_CHUNK]:
                entries = self._buckets[bucket]
                del entries[key]
                if not entries:
                    del self._buckets[bucket], self._since[bucket]
            gone = min(RECORD_CHUNK, len(superseded) - start)
            self._size -= gone
            self.dropped += gone
            yield

    def batch(self, limit: int) -> list[Row]:
        """Up to `limit` waiting rows, oldest buckets first."""
        rows: list[Row] = []
        for bucket in sorted(self._buckets):
            for (tenant, namespace, name), (value, at, version) in self._buckets[bucket].items():
                rows.append((tenant, namespace, name, bucket, value, at, version))
                if len(rows) == limit:
                    return rows
        return rows

    def remove(self, rows: Sequence[Row]) -> None:
        """Forget written rows, unless a newer value for the same bucket arrived meanwhile."""
        for tenant, namespace, name, bucket, value, at, version in rows:
            entries = self._buckets.get(bucket)
            key = (tenant, namespace, name)
            if entries is None or entries.get(key) != (value, at, version):
                continue
            del entries[key]
            self._size -= 1
            if not entries:
                del self._buckets[bucket], self._since[bucket]

    def oldest(self) -> float | None:
        """When the oldest bucket still waiting first got a value (unix s); None if empty."""
        return self._since[min(self._since)] if self._since else None


class Recorder:
    """Takes changed counters from the node's store into history buckets and writes them."""

    def __init__(
        self,
        counters: CounterStore,
        history: HistoryStore,
        owns: Callable[[int], bool],
        *,
        flush_interval_s: float,
        bucket_s: int,
        capacity: int = MAX_BUFFERED,
        tracing: Tracing = OFF,
    ) -> None:
        self.counters = counters
        self.tracing = tracing
        self.history = history
        self.owns = owns  # shard -> whether this node records it (it is the coordinator)
        self.flush_interval_s = flush_interval_s
        self.bucket_s = bucket_s
        self.buffer = HistoryBuffer(capacity)
        self.healthy = True
        self.last_error = ""
        self.unhealthy_since: float | None = None  # unix time the current outage began
        self.last_flush_s = 0.0
        self.flushes = 0
        self.written = 0  # rows written since the start
        self.write_batch = WRITE_BATCH  # the most rows a write takes now (next_write_batch)
        self._migrated = False
        self._lock = asyncio.Lock()
        self._recorded: frozenset[int] = frozenset()  # the shards recorded at the last turn

    async def start(self) -> None:
        """Run the migrations; if the store is down, the first flush that reaches it will."""
        async with self._lock:
            try:
                await self._migrate()
            except HistoryError as error:
                self._failed(error, "migrations wait")

    async def run(self) -> None:
        """Flush every interval; the node runs this loop's turns under its supervisor
        (node/obs/supervision.py), which logs, counts and reports an unexpected error."""
        while True:
            await self.next_turn()
            await self.flush()

    async def next_turn(self) -> None:
        await asyncio.sleep(self.flush_interval_s)

    async def record(self, now: float) -> int:
        """Buffer the value of every changed counter this node records, under now's bucket
        (RECORD_CHUNK counters per loop turn), and of every counter of a shard taken over (a
        shard per loop turn: a third of a million counters at a million); returns how many."""
        counters, owns = self.counters, self.owns
        mine = frozenset(shard for shard in counters.shard_numbers() if owns(shard))
        taken_over, self._recorded = sorted(mine - self._recorded), mine
        recorded = 0
        # those changed before this turn; one changed again meanwhile waits for the next turn
        left = counters.history_dirty_count()
        while left > 0:
            recorded += self._put(counters.take_history_values(owns, RECORD_CHUNK), now)
            left -= RECORD_CHUNK
            await asyncio.sleep(0)
        for shard in taken_over:  # see above: values the last recorder may not have filed
            await asyncio.sleep(0)
            if owns(shard):
                recorded += self._put(counters.history_values_of(shard), now)
        before = self.buffer.dropped
        for _ in self.buffer.trimming():
            await asyncio.sleep(0)
        dropped = self.buffer.dropped - before
        if dropped:
            log.warning(
                "history buffer full (%d entries): dropped %d values of the oldest buckets",
                self.buffer.capacity,
                dropped,
            )
        return recorded

    def _put(self, values: list[tuple[Key, int, int]], now: float) -> int:
        bucket, put = bucket_of(now, self.bucket_s), self.buffer.put
        for key, value, version in values:  # saturated: history columns are int64 (model.Row)
            put(key, bucket, saturate(value)[0], now, min(version, INT64_MAX))
        return len(values)

    async def flush(self, now: float | None = None) -> None:
        """Record what changed, then write everything waiting (oldest first)."""
        async with self._lock:
            await self.record(time.time() if now is None else now)
            started = time.monotonic()
            written = 0
            try:
                await self._migrate()
                if len(self.buffer):
                    attributes = {
                        "counters.values": len(self.buffer),
                        "counters.store": self.history.name,
                    }
                    with self.tracing.span("history write", attributes=attributes):
                        while rows := self.buffer.batch(self.write_batch):
                            await self._write(rows)
                            self.buffer.remove(rows)
                            written += len(rows)
                if not written:
                    await self.history.ping()  # so an idle node notices an outage too
            except HistoryError as error:
                self.written += written
                self._failed(error, f"{len(self.buffer)} values wait")
                return
            if not self.healthy:
                log.info("history store back; wrote %d values", written)
            self.healthy, self.last_error, self.unhealthy_since = True, "", None
            self.written += written
            self.last_flush_s = time.monotonic() - started
            self.flushes += 1

    async def _write(self, rows: list[Row]) -> None:
        try:
            await self.history.write(rows)
        except HistoryTimeout:
            self.write_batch = next_write_batch(self.write_batch, len(rows), timed_out=True)
            raise
        self.write_batch = next_write_batch(self.write_batch, len(rows), timed_out=False)

    async def _migrate(self) -> None:
        if not self._migrated:
            applied = await self.history.migrate()
            if applied:
                log.info("history %s: applied migrations %s", self.history.name, applied)
            self._migrated = True

    def _failed(self, error: HistoryError, waiting: str) -> None:
        if self.healthy:
            log.warning("history store %s unreachable, %s: %s", self.history.name, waiting, error)
            self.unhealthy_since = time.time()
        self.healthy, self.last_error = False, str(error)

    def status(self, now: float | None = None) -> dict[str, Any]:
        oldest = self.buffer.oldest()
        now = time.time() if now is None else now
        return {
            "store": self.history.name,
            "healthy": self.healthy,
            "buffered": len(self.buffer),
            "write_lag_s": 0.0 if oldest is None else round(max(0.0, now - oldest), 3),
            "dropped": self.buffer.dropped,
            "written": self.written,
            "flushes": self.flushes,
            "last_flush_s": round(self.last_flush_s, 6),
            "last_error": self.last_error,
            "unhealthy_since": self.unhealthy_since and round(self.unhealthy_since, 3),
        }

    async def close(self) -> None:
        try:
            await self.flush()  # a clean stop records the last changes
        finally:
            await self.history.close()

"""The change feed's per-node event log and the event id codec. Pure: time is an argument.

Each node keeps the events it published (as the coordinator of their shards) in one bounded
log, numbered by a per-node sequence. A sequence number is `incarnation << 44 | count`: it
grows within a node's life (2^44 events, 5 years at 100,000 a second) and across its
restarts (2^19 of them fit in 63 bits), so a reader's position in an earlier life's log is
below everything the new log holds and shows up as a gap, never as a silent skip or a
repeat.

Retention: an event stays while the log holds fewer than `max_events` newer ones and it is
younger than `retention_ms` (defaults 100,000 and 300 s). `floor` is the highest sequence
number no longer held (every event above it still is): a reader whose position is below the
floor has missed events. Events are filed per (tenant, namespace), so a read touches only
its own subject's events, found by bisection. An event held costs 184 B (its record tuple,
its sequence number and its list entries), 219 B when its value and version are past the
small ints (tracemalloc over 100,000), plus its name when that is not the store's own
string (a change made by a request to a counter that existed holds the request's copy:
49 B and one per character); records past the floor wait up to SWEEP_MS for the sweep.
So the default log takes about 20-35 MB under load.

An SSE event id is the reader's position in every node's log, `node:seq,node:seq` (a node
absent from it has not been read yet); `decode_position` refuses anything else.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping
from typing import NamedTuple

SEQ_BITS = 44
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_RETENTION_MS = 300_000
SWEEP_MS = 1000  # records past the floor are dropped at most this often
SCAN_LIMIT = 20_000  # events of a subject looked at per read, so a rare prefix costs bounded work
MAX_ID_NODES = 256  # a cluster of more nodes than this would need ids that say less
MAX_ID_CHARS = 8192
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A version past this (2^64 - 1 in increments and decrements over the counter's life) is
# filed as this: the same figure in this node's log and in peers' reads of it (feed_wire.py
# carries a uint64), so merged logs order it alike; past it a stream cannot tell such a
# counter's older states from newer ones and sends each (stream.py).
MAX_VERSION = (1 << 64) - 1


class Event(NamedTuple):
    seq: int
    tenant: str
    namespace: str
    name: str
    value: int
    change: int  # net change since the counter's previous event (replayed: see publisher.py)
    at_ms: int  # unix ms of the change tap's turn that published it
    replayed: bool  # republished by a node that took the shard over (publisher.py)
    version: int  # the counter's state's version (crdt/packed.py): a later state's is larger


Subject = tuple[str, str]  # (tenant, namespace)
# tenant, namespace, name, value, change, replayed, version
Item = tuple[str, str, str, int, int, bool, int]
Record = tuple[int, str, int, int, int, bool, int]  # seq, name, value, change, at_ms, replayed, ...


class _Filed:
    """One subject's records, oldest first; those before `start` are no longer held."""

    __slots__ = ("records", "seqs", "start")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.records: list[Record] = []
        self.start = 0

    def drop_through(self, floor: int) -> None:
        self.start = bisect_right(self.seqs, floor, lo=self.start)
        if self.start >= 1024 and self.start * 2 >= len(self.seqs):
            del self.seqs[: self.start], self.records[: self.start]
            self.start = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.start


class Read(NamedTuple):
    floor: int  # events at or below it are no longer held
    upto: int  # the position this read reached (resume after it)
    events: list[Event]


class EventLog:
    """A node's published events, bounded by count and age.

    Sequence numbers have no holes, so the count held is `head - floor`, and retention only
    moves the floor: reads skip what is at or below it at once, and the records themselves
    are dropped by a sweep at most every SWEEP_MS (so a log holds at most that much past
    its bound, and appending costs two list appends per event, not a deque per event)."""

    def __init__(
        self,
        incarnation: int,
        max_events: int = DEFAULT_MAX_EVENTS,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.base = incarnation << SEQ_BITS
        self.floor = self.base  # nothing of an earlier life is held
        self.head = self.base  # the last sequence number issued
        self.max_events = max_events
        self.retention_ms = retention_ms
        self._filed: dict[Subject, _Filed] = {}
        self._appends: deque[tuple[int, int]] = deque()  # (at_ms, last seq), per append
        self._swept = self.base  # the floor the last sweep dropped records through
        self._swept_at = 0
        self.last_at_ms = 0

    def __len__(self) -> int:
        return self.head - self.floor

    @property
    def trimmed(self) -> int:
        """Events dropped by retention since the start."""
        return self.floor - self.base

    def append(self, items: Iterable[Item], at_ms: int, *, events: bool = True) -> list[Event]:
        """File (tenant, namespace, name, value, change, replayed, version) items as events
        at `at_ms` (never earlier than the last event's: a reader merges logs by time); returns them
        as Events when `events`."""
        at_ms = self.last_at_ms = max(at_ms, self.last_at_ms)
        filed_of, seq, out = self._filed, self.head, []
        for tenant, namespace, name, value, change, replayed, version in items:
            seq += 1
            if version > MAX_VERSION:
                version = MAX_VERSION
            filed = filed_of.get((tenant, namespace))
            if filed is None:
                filed = filed_of[tenant, namespace] = _Filed()
            filed.seqs.append(seq)
            filed.records.append((seq, name, value, change, at_ms, replayed, version))
            if events:
                out.append(
                    Event(seq, tenant, namespace, name, value, change, at_ms, replayed, version)
                )
        if seq != self.head:
            self._appends.append((at_ms, seq))
            self.head = seq
        self.trim(at_ms)
        return out

    def trim(self, now_ms: int) -> None:
        """Raise the floor past what the count and age bounds no longer hold."""
        floor = max(self.floor, self.head - self.max_events)
        appends, oldest_kept = self._appends, now_ms - self.retention_ms
        while appends and (appends[0][0] < oldest_kept or appends[0][1] <= floor):
            at_ms, last = appends.popleft()
            if at_ms < oldest_kept:
                floor = max(floor, last)
        self.floor = floor
        if floor > self._swept and now_ms - self._swept_at >= SWEEP_MS:
            for subject, filed in list(self._filed.items()):
                filed.drop_through(floor)
                if not filed:
                    del self._filed[subject]
            self._swept, self._swept_at = floor, now_ms

    def read(self, subject: Subject, prefix: str, after: int, limit: int) -> Read:
        """Up to `limit` events of the subject whose name starts with `prefix`, after
        sequence number `after`. `after` < 0 reads nothing: where the log's head is."""
        if after < 0:
            return Read(self.floor, self.head, [])
        filed = self._filed.get(subject)
        if filed is None:
            return Read(self.floor, max(after, self.head), [])
        seqs, records = filed.seqs, filed.records
        first = bisect_right(seqs, max(after, self.floor), lo=filed.start)
        stop = min(len(seqs), first + SCAN_LIMIT)
        found: list[Event] = []
        tenant, namespace = subject
        for i in range(first, stop):
            seq, name, value, change, at_ms, replayed, version = records[i]
            if name.startswith(prefix):
                found.append(
                    Event(seq, tenant, namespace, name, value, change, at_ms, replayed, version)
                )
                if len(found) == limit:
                    return Read(self.floor, seq, found)
        upto = self.head if stop == len(seqs) else seqs[stop - 1]
        return Read(self.floor, max(after, upto), found)


class BadPosition(ValueError):
    """An event id this service did not write."""


def encode_position(position: Mapping[str, int]) -> str:
    return ",".join(f"{node}:{seq}" for node, seq in sorted(position.items()))


def decode_position(text: str) -> dict[str, int]:
    """`node:seq,...` as {node: seq}; raises BadPosition for anything else."""
    if not text or len(text) > MAX_ID_CHARS:
        raise BadPosition("an event id is node:seq,... as this feed wrote it")
    out: dict[str, int] = {}
    parts = text.split(",")
    if len(parts) > MAX_ID_NODES:
        raise BadPosition(f"an event id names at most {MAX_ID_NODES} nodes")
    for part in parts:
        node, sep, seq = part.rpartition(":")
        if not sep or NODE_ID.fullmatch(node) is None or node in out:
            raise BadPosition(f"{part!r} is not node:seq")
        if not (seq.isascii() and seq.isdigit()) or len(seq) > 19 or int(seq) >= 1 << 63:
            raise BadPosition(f"{part!r} is not node:seq")
        out[node] = int(seq)
    return out


def iso_ms(at_ms: int) -> str:
    """Unix ms as ISO-8601 UTC with milliseconds, the feed's `at`."""
    seconds, ms = divmod(at_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"

"""The change feed's per-node event log and the event id codec. Pure: time is an argument.

Each node keeps the events it published (as the coordinator of their shards) in one bounded
log, filed per subject (tenant, namespace) and numbered by a sequence of the subject's own,
so that neither a position nor a gap says anything about another tenant's writes. A
sequence number is `incarnation << 44 | count`: it grows within a node's life (2^44 events,
5 years at 100,000 a second) and across its restarts (2^19 of them fit in 63 bits), so a
reader's position in an earlier life's log is below everything the new log holds and shows
up as a gap, never as a silent skip or a repeat. A position is a position in its subject's
sequence only: an event id resumes the stream of the namespace it came from.

Retention, per subject: an event stays while it is younger than `retention_ms` and its
subject holds it within its share of `max_events` (defaults 300 s and 100,000). The shares
are max-min fair: while the log holds more than `max_events`, the subjects that hold the
most are trimmed to one level, the largest at which the log fits, so a busy tenant's burst
drops its own oldest events and leaves a quiet subject's alone (unless every subject holds
as much). Each subject's `floor` is the highest sequence number of it no longer held (every
event above it still is): a reader whose position is below the floor has missed events. A
read touches only its own subject's events. An event held costs 141 B (its record tuple,
its sequence number and its list entry), 205 B when its value and version are past the
small ints (tracemalloc over 100,000), plus its name when that is not the store's own
string (a change made by a request to a counter that existed holds the request's copy: 49 B
and one per character); records past a floor wait up to SWEEP_MS for the sweep. So the
default log takes about 20-35 MB under load. A subject's sequence lives as long as the node
(about 150 B per tenant and namespace that ever published here): started again, it would
hand out numbers a reader already holds.

An SSE event id is the reader's position in every node's log, `node:seq,node:seq` (a node
absent from it has not been read yet); `decode_position` refuses anything else.
"""

from __future__ import annotations

import re
import time
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
    """One subject's records, oldest first: records[i] has sequence number first + i, and
    those at or below `floor` are no longer held (the sweep drops them)."""

    __slots__ = ("first", "floor", "head", "records")

    def __init__(self, base: int) -> None:
        self.records: list[Record] = []
        self.first = base + 1  # the sequence number of records[0]
        self.floor = base  # the last sequence number no longer held
        self.head = base  # the last sequence number issued

    def sweep(self) -> None:
        """Drop the records at or below the floor, once they are many (amortised O(1))."""
        gone = self.floor + 1 - self.first
        if gone >= 1024 or (gone > 0 and gone == len(self.records)):
            del self.records[:gone]
            self.first += gone


class Read(NamedTuple):
    floor: int  # events at or below it are no longer held
    upto: int  # the position this read reached (resume after it)
    events: list[Event]


class EventLog:
    """A node's published events, per subject, bounded by count and age.

    A subject's sequence numbers have no holes, so it holds `head - floor` events, and
    retention only moves floors: reads skip what is at or below a floor at once, and the
    records themselves are dropped by a sweep at most every SWEEP_MS (so a log holds at most
    that much past its bound, and appending costs a list append per event)."""

    def __init__(
        self,
        incarnation: int,
        max_events: int = DEFAULT_MAX_EVENTS,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.base = incarnation << SEQ_BITS  # every floor starts here: nothing earlier is held
        self.max_events = max_events
        self.retention_ms = retention_ms
        self._filed: dict[Subject, _Filed] = {}
        # (at_ms, subject's records, its last sequence number), per append and subject
        self._appends: deque[tuple[int, _Filed, int]] = deque()
        self._held = 0  # events above their subject's floor, over every subject
        self._trimmed = 0
        self._swept_at = 0
        self.last_at_ms = 0

    def __len__(self) -> int:
        return self._held

    @property
    def trimmed(self) -> int:
        """Events dropped by retention since the start."""
        return self._trimmed

    def floor(self, subject: Subject) -> int:
        filed = self._filed.get(subject)
        return self.base if filed is None else filed.floor

    def head(self, subject: Subject) -> int:
        filed = self._filed.get(subject)
        return self.base if filed is None else filed.head

    def append(self, items: Iterable[Item], at_ms: int, *, events: bool = True) -> list[Event]:
        """File (tenant, namespace, name, value, change, replayed, version) items as events
        at `at_ms` (never earlier than the last event's: a reader merges logs by time); returns them
        as Events when `events`."""
        at_ms = self.last_at_ms = max(at_ms, self.last_at_ms)
        filed_of, out, touched = self._filed, [], set()
        appended = 0
        for tenant, namespace, name, value, change, replayed, version in items:
            if version > MAX_VERSION:
                version = MAX_VERSION
            filed = filed_of.get((tenant, namespace))
            if filed is None:
                filed = filed_of[tenant, namespace] = _Filed(self.base)
            seq = filed.head = filed.head + 1
            filed.records.append((seq, name, value, change, at_ms, replayed, version))
            touched.add(filed)
            appended += 1
            if events:
                out.append(
                    Event(seq, tenant, namespace, name, value, change, at_ms, replayed, version)
                )
        self._held += appended
        self._appends.extend((at_ms, filed, filed.head) for filed in touched)
        self.trim(at_ms)
        return out

    def trim(self, now_ms: int) -> None:
        """Raise the floors past what the age and count bounds no longer hold."""
        appends, oldest_kept = self._appends, now_ms - self.retention_ms
        while appends and (appends[0][0] < oldest_kept or appends[0][2] <= appends[0][1].floor):
            at_ms, filed, last = appends.popleft()
            if at_ms < oldest_kept:
                self._raise_floor(filed, last)
        if self._held > self.max_events:
            self._fair_share()
        if len(appends) > 2 * self.max_events + 1024:
            # entries behind a young one at the head whose events the fair share dropped:
            # kept, they would grow with the rate of appends times the retention. Each left
            # holds an event, so at most max_events stay (amortised O(1) per append).
            self._appends = deque(a for a in appends if a[2] > a[1].floor)
        if now_ms - self._swept_at >= SWEEP_MS:
            for filed in self._filed.values():
                filed.sweep()
            self._swept_at = now_ms

    def _raise_floor(self, filed: _Filed, floor: int) -> None:
        if floor > filed.floor:
            self._held -= floor - filed.floor
            self._trimmed += floor - filed.floor
            filed.floor = floor

    def _fair_share(self) -> None:
        """Trim the subjects that hold the most to one level, the largest at which the log
        holds at most max_events (max-min fairness: water-filling from the top)."""
        sizes = sorted((f.head - f.floor for f in self._filed.values()), reverse=True)
        budget, level = self.max_events, 0
        # with the k largest cut to `level`, the rest kept whole: find the largest level
        rest = sum(sizes)
        for k, size in enumerate(sizes, start=1):
            rest -= size
            level = (budget - rest) // k
            if k == len(sizes) or level >= sizes[k]:
                break
        for filed in self._filed.values():
            if filed.head - filed.floor > level:
                self._raise_floor(filed, filed.head - max(level, 0))

    def read(self, subject: Subject, prefix: str, after: int, limit: int) -> Read:
        """Up to `limit` events of the subject whose name starts with `prefix`, after
        sequence number `after`. `after` < 0 reads nothing: where the log's head is."""
        filed = self._filed.get(subject)
        if filed is None:
            return Read(self.base, max(after, self.base), [])
        if after < 0:
            return Read(filed.floor, filed.head, [])
        records, first = filed.records, filed.first
        start = max(after, filed.floor) + 1 - first
        stop = min(len(records), start + SCAN_LIMIT)
        found: list[Event] = []
        tenant, namespace = subject
        for i in range(start, stop):
            seq, name, value, change, at_ms, replayed, version = records[i]
            if name.startswith(prefix):
                found.append(
                    Event(seq, tenant, namespace, name, value, change, at_ms, replayed, version)
                )
                if len(found) == limit:
                    return Read(filed.floor, seq, found)
        upto = filed.head if stop >= len(records) else first + stop - 1
        return Read(filed.floor, max(after, upto), found)


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

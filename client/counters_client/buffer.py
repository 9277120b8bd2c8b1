"""The coalescing buffer behind add(): same-counter deltas summed until a flush takes them.

Pure bookkeeping, no I/O and no clock of its own. `size` is what the bound applies to: the
counters taken but not yet settled (acknowledged or given up) plus those still pending,
so a node that stops answering fills the buffer instead of memory. A flush may take only
part of what is pending (as much as it can send now); the rest goes on summing. That part
is half the heaviest counters (by the adds they hold, in powers of two: a counter is marked
when its adds reach 2, 4, 8, ...; under Zipf keys these hold most of the adds, and so go
out with nearly every flush) and half the oldest pending, so every counter's turn comes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from counters_client import errors
from counters_client.topology import valid_name

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# An entry: [summed delta, add() calls summed, the times of its sampled adds or None].
Entry = list[Any]


@dataclass
class Generation:
    """What one flush took: per namespace, name -> entry."""

    ops: dict[str, dict[str, Entry]]
    count: int  # counters (entries) in it
    adds: int  # add() calls in it


class Coalescer:
    """Pending adds, summed per (namespace, name)."""

    def __init__(self, max_buffer: int, clock: Callable[[], float], sample_every: int = 64) -> None:
        self.max_buffer = max_buffer
        self.clock = clock
        self.pending: dict[str, dict[str, Entry]] = {}
        self.count = 0  # pending entries
        self.adds = 0  # pending add() calls
        self.in_flight = 0  # entries taken and not settled
        self.total_adds = 0
        # levels[k]: (namespace, name) of entries whose adds reached 2**k, in that order
        self.levels: list[list[tuple[str, str]]] = [[] for _ in range(64)]
        self.marks = 0
        # Every sample_every-th add records its time, for the add-to-acknowledged latency.
        self.sample_mask = max(1, sample_every) - 1

    def add(self, namespace: str, name: str, delta: int) -> int:
        """Sum `delta` into the counter's pending entry; the number of pending entries.
        Raises BufferFull when a new entry would pass max_buffer, and the client's typed
        errors for a name or delta the node would refuse (it refuses a whole batch for one)."""
        bucket = self.pending.get(namespace)
        if bucket is None:
            if not valid_name(namespace):
                raise errors.InvalidName(f"namespace {namespace!r} is not a valid name")
            bucket = self.pending[namespace] = {}
        entry = bucket.get(name)
        if entry is None:
            if self.count + self.in_flight >= self.max_buffer:
                raise errors.BufferFull(f"{self.max_buffer} counters unacknowledged")
            if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
                raise errors.InvalidDelta(f"delta must be an int64, not {delta!r}")
            if not valid_name(name):
                raise errors.InvalidName(f"name {name!r} is not a valid name")
            entry = bucket[name] = [delta, 1, None]
            self.count += 1
        else:
            total = entry[0] + delta if type(delta) is int else None
            if total is None or not INT64_MIN <= total <= INT64_MAX:
                raise errors.InvalidDelta(f"delta {delta!r} would take the sum out of int64")
            entry[0] = total
            adds = entry[1] = entry[1] + 1
            if not adds & (adds - 1):  # a power of two: the entry moves up a level
                self.levels[adds.bit_length() - 1].append((namespace, name))
                self.marks += 1
        self.adds += 1
        self.total_adds += 1
        if not self.total_adds & self.sample_mask:
            if entry[2] is None:
                entry[2] = []
            entry[2].append(self.clock())
        return self.count

    @property
    def size(self) -> int:
        return self.count + self.in_flight

    def take(self, limit: int | None = None) -> Generation | None:
        """At most `limit` pending entries (all when None), half hot and the rest the oldest
        (see the module docstring), now in flight; None when nothing is pending."""
        if not self.count or (limit is not None and limit < 1):
            return None
        if limit is None or limit >= self.count:
            taken, self.pending = self.pending, {}
            self._clear_marks()
        else:
            taken = self._take_hot(limit // 2)
            self._take_oldest(limit - sum(len(b) for b in taken.values()), taken)
        count = sum(len(bucket) for bucket in taken.values())
        adds = sum(entry[1] for bucket in taken.values() for entry in bucket.values())
        self.count -= count
        self.adds -= adds
        self.in_flight += count
        return Generation(taken, count, adds)

    def _clear_marks(self) -> None:
        for level in self.levels:
            level.clear()
        self.marks = 0

    def _take_hot(self, limit: int) -> dict[str, dict[str, Entry]]:
        """The heaviest pending entries, highest level first, oldest first in a level. A
        mark whose entry was taken since is skipped (or, if the counter is pending again,
        takes its new entry: early, which is harmless)."""
        taken: dict[str, dict[str, Entry]] = {}
        pending, got = self.pending, 0
        for level in reversed(self.levels):
            if got >= limit:
                break
            seen = 0
            for namespace, name in level:
                if got >= limit:
                    break
                seen += 1
                bucket = pending.get(namespace)
                entry = bucket.pop(name, None) if bucket is not None else None
                if entry is None:
                    continue
                if not bucket:
                    del pending[namespace]
                taken.setdefault(namespace, {})[name] = entry
                got += 1
            del level[:seen]
            self.marks -= seen
        if self.marks > 4 * self.max_buffer:  # stale marks of entries taken as the oldest
            self._clear_marks()
        return taken

    def _take_oldest(self, limit: int, taken: dict[str, dict[str, Entry]]) -> None:
        left = limit
        for namespace in list(self.pending):
            if left <= 0:
                break
            bucket = self.pending[namespace]
            into = taken.setdefault(namespace, {})
            if len(bucket) <= left:
                into.update(self.pending.pop(namespace))
                left -= len(bucket)
            else:
                for name in list(itertools.islice(bucket, left)):
                    into[name] = bucket.pop(name)
                left = 0

    def settle(self, entries: int) -> None:
        """`entries` taken earlier are acknowledged or given up."""
        self.in_flight -= entries

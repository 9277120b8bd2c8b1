"""The coalescing buffer behind add(): same-counter deltas summed until a flush takes them.

Pure bookkeeping, no I/O and no clock of its own. `size` is what the bound applies to: the
counters taken but not yet settled (acknowledged or given up) plus those still pending,
so a node that stops answering fills the buffer instead of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from counters_client import errors
from counters_client.topology import valid_name

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# An entry: [summed delta, number of add() calls it holds].
Entry = list[int]


@dataclass
class Generation:
    """What one flush took: per namespace, name -> [delta, adds]; and sampled add times."""

    ops: dict[str, dict[str, Entry]]
    count: int  # counters (entries) in it
    adds: int  # add() calls in it
    samples: list[float] = field(default_factory=list)


class Coalescer:
    """Pending adds, summed per (namespace, name)."""

    def __init__(self, max_buffer: int, clock: Callable[[], float], sample_every: int = 64) -> None:
        self.max_buffer = max_buffer
        self.clock = clock
        self.pending: dict[str, dict[str, Entry]] = {}
        self.count = 0  # pending entries
        self.adds = 0  # pending add() calls
        self.in_flight = 0  # entries taken and not settled
        self.samples: list[float] = []
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
            bucket[name] = [delta, 1]
            self.count += 1
        else:
            total = entry[0] + delta if type(delta) is int else None
            if total is None or not INT64_MIN <= total <= INT64_MAX:
                raise errors.InvalidDelta(f"delta {delta!r} would take the sum out of int64")
            entry[0] = total
            entry[1] += 1
        self.adds += 1
        if not self.adds & self.sample_mask:
            self.samples.append(self.clock())
        return self.count

    @property
    def size(self) -> int:
        return self.count + self.in_flight

    def has_room(self) -> bool:
        return self.count + self.in_flight < self.max_buffer

    def take(self) -> Generation | None:
        """Everything pending, now in flight; None when nothing is."""
        if not self.count:
            return None
        generation = Generation(self.pending, self.count, self.adds, self.samples)
        self.in_flight += self.count
        self.pending, self.count, self.adds, self.samples = {}, 0, 0, []
        return generation

    def settle(self, entries: int) -> None:
        """`entries` taken earlier are acknowledged or given up."""
        self.in_flight -= entries

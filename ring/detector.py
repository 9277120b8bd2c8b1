"""Failure detection as a pure policy: who has been silent for too long.

The detector only remembers when each node was last heard from; the caller passes the clock
reading (`now`, seconds on any monotonic clock) to every call. Keeping time out makes the policy
deterministic and testable without sleeping, and leaves the clock and the event loop to node/.
A suspect is only a suspect: node/ turns it into a "fail" event, never into a removal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["FailureDetector"]


def _check_time(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FailureDetector:
    """Last-heard times per node, and the silence (`timeout_s`, seconds) that makes a suspect."""

    timeout_s: float
    heard_at: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if _check_time(self.timeout_s, "timeout_s") <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        times = {node: _check_time(t, "a heard time") for node, t in self.heard_at.items()}
        object.__setattr__(self, "heard_at", MappingProxyType(times))

    def __hash__(self) -> int:
        return hash((self.timeout_s, frozenset(self.heard_at.items())))

    def heard(self, node_id: str, now: float) -> FailureDetector:
        """This detector, having heard from `node_id` at `now`."""
        # Readings can arrive out of order (two gossip rounds in flight); keep the latest.
        latest = max(_check_time(now, "now"), self.heard_at.get(node_id, -math.inf))
        return FailureDetector(self.timeout_s, {**self.heard_at, node_id: latest})

    def forget(self, node_id: str) -> FailureDetector:
        """This detector without `node_id` (a removed node is no longer watched)."""
        if node_id not in self.heard_at:
            return self
        rest = {node: t for node, t in self.heard_at.items() if node != node_id}
        return FailureDetector(self.timeout_s, rest)

    def last_heard(self, node_id: str) -> float | None:
        return self.heard_at.get(node_id)

    def suspects(self, now: float) -> frozenset[str]:
        """The nodes not heard from for more than `timeout_s` seconds at `now`."""
        deadline = _check_time(now, "now") - self.timeout_s
        return frozenset(node for node, t in self.heard_at.items() if t < deadline)

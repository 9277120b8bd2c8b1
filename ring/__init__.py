"""Pure placement: shards and the ring, move plans, the membership view, failure detection.

Nothing here does I/O, reads a clock or draws random numbers, so every node that holds the
same ring and view computes the same answers; node/ supplies the sockets and the time.
"""

from __future__ import annotations

from ring.detector import FailureDetector
from ring.hashing import hash64, key_hash
from ring.membership import (
    EVENTS,
    LIVE,
    TRANSITIONS,
    Member,
    MembershipError,
    Status,
    TransitionError,
    View,
)
from ring.plan import Move, plan
from ring.ring import DEFAULT_REPLICAS, DEFAULT_SHARDS, MAX_SHARDS, Ring, RingError

__all__ = [
    "DEFAULT_REPLICAS",
    "DEFAULT_SHARDS",
    "EVENTS",
    "LIVE",
    "MAX_SHARDS",
    "TRANSITIONS",
    "FailureDetector",
    "Member",
    "MembershipError",
    "Move",
    "Ring",
    "RingError",
    "Status",
    "TransitionError",
    "View",
    "hash64",
    "key_hash",
    "plan",
]

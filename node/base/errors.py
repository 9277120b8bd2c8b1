"""One error root for the node, mapped to application/problem+json in one middleware.

Client mistakes (4xx) and peer or store faults (5xx) are separate classes. Every error has a
stable `type` that clients may branch on; the human text may change. The middleware in
node/http/middleware.py turns them into application/problem+json answers.
"""

from __future__ import annotations

from typing import Any

# Relative to the node that answered (RFC 9457 allows a relative reference): every node
# serves a short page for each type at /problems/<slug> (node/http/problems.py), so the
# types are URIs this project controls rather than a domain it does not own.
TYPE_BASE = "/problems/"


class RefusedToStart(Exception):
    """The node's own files say it must not run as configured (a corrupt incarnation, a ring
    of another shard count). Not an HTTP error: `counters node` prints it and exits 1, since
    guessing would risk reusing an actor id or misplacing every counter."""


class CountersError(Exception):
    status = 500
    type = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer needs besides the problem body."""
        return {}

    def to_problem(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class ClientError(CountersError):
    """The caller's mistake: nothing was changed."""

    status = 400
    type = "bad-request"
    title = "Bad request"


class InvalidName(ClientError):
    type = "invalid-name"
    title = "Invalid namespace or counter name"


class InvalidDelta(ClientError):
    type = "invalid-delta"
    title = "Invalid delta"


class InvalidConsistency(ClientError):
    type = "invalid-consistency"
    title = "Invalid consistency level"


class InvalidBody(ClientError):
    type = "invalid-body"
    title = "Invalid request body"


class Overflow(ClientError):
    status = 422
    type = "overflow"
    title = "Counter would leave the 64-bit range"


class IdempotencyKeyReused(ClientError):
    status = 422
    type = "idempotency-key-reused"
    title = "Idempotency-Key already used for a different request"


class InvalidEventId(ClientError):
    type = "invalid-event-id"
    title = "Invalid Last-Event-ID"


class NotFound(ClientError):
    status = 404
    type = "not-found"
    title = "Not found"


class Conflict(ClientError):
    status = 409
    type = "conflict"
    title = "Conflict"


class ServerError(CountersError):
    """A peer or store fault; the request may or may not have had an effect (see detail)."""


class QuorumUnavailable(ServerError):
    status = 503
    type = "quorum-unavailable"
    title = "Not enough live replicas"


class InDoubt(QuorumUnavailable):
    """A keyed op whose earlier attempt is held by a node that cannot be asked whether it
    applied (paused, cut off, restarting): nothing applied now; retry after Retry-After."""

    type = "in-doubt"
    title = "An earlier attempt of this Idempotency-Key is in doubt"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, may_have_applied=True, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QuorumTimeout(ServerError):
    status = 504
    type = "quorum-timeout"
    title = "Replicas did not answer in time"


class NotReady(ServerError):
    status = 503
    type = "not-ready"
    title = "Node not ready"


class StreamLimit(CountersError):
    """No more event streams now: streams end and free their places, so try in 5 s."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class TenantStreams(StreamLimit, ClientError):
    status = 429
    type = "tenant-streams"
    title = "This tenant holds as many event streams on this node as it may"


class TooManyStreams(StreamLimit, ServerError):
    status = 503
    type = "too-many-streams"
    title = "This node serves as many event streams as it may"


class PeerError(ServerError):
    status = 502
    type = "peer-error"
    title = "A peer failed"


class PeerUnreachable(PeerError):
    """A request that never left: no connection to the peer could be had, so nothing of it
    ran there (a killed node refuses connections; a dead link refuses at once)."""

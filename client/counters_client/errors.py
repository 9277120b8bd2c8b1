"""Typed errors built from the node's problem+json answers.

The node names each problem by a stable `type`, `/problems/<slug>` (a page every node
serves); the client maps the slug to a class, so callers branch on classes, not strings.
`ClientError`s (4xx) changed nothing. `ServerError`s may or may not have applied
(`may_have_applied`); the client has already retried them, with the same Idempotency-Key
(`idempotency_key`: pass it to the same call again to retry safely), until its deadline.
`may_have_applied` speaks for every attempt of the call, not only the last one: a call
whose first attempt timed out and whose last was refused may have applied.
"""

from __future__ import annotations

from typing import Any


class CountersError(Exception):
    """Every error the client raises."""

    status = 0
    slug = ""

    def __init__(self, detail: str = "", problem: dict[str, Any] | None = None) -> None:
        self.problem: dict[str, Any] = problem or {}
        self.detail = detail or str(self.problem.get("detail", "")) or type(self).__name__
        self.earlier_may_have_applied = False  # set by the transport: see the module
        self.idempotency_key: str | None = None  # the key the call's attempts went under
        # set by the transport too: the last 2xx answer it did not accept (a batch with ops
        # short of quorum: some ops of it applied), and whether an attempt without an
        # answer (or answered "may have applied") may have applied anything
        self.reply: Any = None
        self.unanswered_may_have_applied = False
        super().__init__(self.detail)

    @property
    def may_have_applied(self) -> bool:
        """Whether the operation may have taken effect: the node says so for 5xx answers,
        and any earlier attempt of the call that timed out or was answered so counts too."""
        if self.earlier_may_have_applied:
            return True
        return bool(self.problem.get("may_have_applied", isinstance(self, ServerError)))


class ClientError(CountersError):
    """The request was refused as it stands (4xx); nothing changed."""


class ServerError(CountersError):
    """A node, peer or store fault (5xx); see may_have_applied."""


class BufferFull(CountersError):
    """add() found the buffer holding max_buffer unacknowledged counters."""


class NotSent(CountersError):
    """add()s a close() cut short (a timeout, a cancel) before they were sent: nothing
    applied."""


class DeadlineExceeded(ServerError):
    """Retries did not succeed within the deadline; `last` is the last error seen. A write
    may have applied unless every attempt was refused (429: nothing applied); retrying
    with the same Idempotency-Key is safe either way."""

    def __init__(self, detail: str, last: CountersError | None = None) -> None:
        super().__init__(detail, last.problem if last is not None else None)
        self.last = last

    @property
    def may_have_applied(self) -> bool:
        """An earlier attempt may have applied, or the last one may have: giving up says
        nothing of its own."""
        if self.earlier_may_have_applied:
            return True
        return self.last is None or self.last.may_have_applied


class ConnectionFailed(ServerError):
    """No answer from the node: refused, reset or timed out."""


class InvalidName(ClientError):
    status, slug = 400, "invalid-name"


class InvalidDelta(ClientError):
    status, slug = 400, "invalid-delta"


class InvalidConsistency(ClientError):
    status, slug = 400, "invalid-consistency"


class InvalidBody(ClientError):
    status, slug = 400, "invalid-body"


class InvalidEventId(ClientError):
    status, slug = 400, "invalid-event-id"


class BadRequest(ClientError):
    status, slug = 400, "bad-request"


class Unauthorized(ClientError):
    status, slug = 401, "unauthorized"


class Forbidden(ClientError):
    status, slug = 403, "forbidden"


class QuotaExceeded(Forbidden):
    slug = "quota-exceeded"


class NotFound(ClientError):
    status, slug = 404, "not-found"


class MethodNotAllowed(ClientError):
    status, slug = 405, "method-not-allowed"


class Conflict(ClientError):
    status, slug = 409, "conflict"


class TooLarge(ClientError):
    status, slug = 413, "too-large"


class Overflow(ClientError):
    status, slug = 422, "overflow"


class IdempotencyKeyReused(ClientError):
    status, slug = 422, "idempotency-key-reused"


class RateLimited(ClientError):
    status, slug = 429, "rate-limited"


class TenantStreams(RateLimited):
    slug = "tenant-streams"  # the tenant holds as many event streams on that node as it may


class HeadersTooLarge(ClientError):
    status, slug = 431, "headers-too-large"


class Internal(ServerError):
    status, slug = 500, "internal"


class PeerError(ServerError):
    status, slug = 502, "peer-error"


class QuorumUnavailable(ServerError):
    status, slug = 503, "quorum-unavailable"


class InDoubt(QuorumUnavailable):
    slug = "in-doubt"


class NotReady(ServerError):
    status, slug = 503, "not-ready"


class TooManyStreams(ServerError):
    status, slug = 503, "too-many-streams"


class HistoryUnavailable(ServerError):
    status, slug = 503, "history-unavailable"


class ShardNotHeld(Conflict):
    slug = "shard-not-held"


class SourceLoading(ServerError):
    """A peer refusal (a node still loading its durable copy): a node answers it to peers only."""

    status, slug = 503, "source-loading"


class NotRecovered(ServerError):
    """A peer refusal (a node still recovering its state): a node answers it to peers only."""

    status, slug = 503, "not-recovered"


class QuorumTimeout(ServerError):
    status, slug = 504, "quorum-timeout"


def _all(root: type[CountersError]) -> list[type[CountersError]]:
    found = []
    for sub in root.__subclasses__():
        found += [sub, *_all(sub)]
    return found


BY_SLUG: dict[str, type[CountersError]] = {cls.slug: cls for cls in _all(CountersError) if cls.slug}


def from_problem(status: int, problem: Any) -> CountersError:
    """The typed error for an answer: by the problem's type slug, else by status family."""
    body = problem if isinstance(problem, dict) else {"detail": str(problem)[:500]}
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    cls = BY_SLUG.get(slug)
    if cls is None:
        cls = ServerError if status >= 500 else ClientError
    error = cls(str(body.get("detail", "")) or f"HTTP {status}", body)
    error.status = status
    return error

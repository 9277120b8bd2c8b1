"""When to retry and how long to wait: pure policy, the client's loops only call it.

Retried, with the same Idempotency-Key: connection errors and timeouts, 502, 503 and 504
(the op may or may not have applied; the key makes a second attempt apply at most once);
429 after its Retry-After (nothing applied). Everything else is final, and so is a 429
without Retry-After: the node's way of saying no retry helps (the request costs more than
the tenant's burst; a smaller one may pass).
"""

from __future__ import annotations

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def retryable(status: int, retry_after: float | None = 0.0) -> bool:
    """Whether the same request may succeed later; a 429 only with a Retry-After."""
    if status == 429:
        return retry_after is not None
    return status in RETRY_STATUSES


def backoff_s(attempt: int, base_s: float, cap_s: float, uniform: float) -> float:
    """Exponential back-off with full jitter: a uniform draw in [0, min(cap, base * 2^n)).
    `uniform` is the caller's draw in [0, 1), so this is tested without randomness."""
    return float(uniform * min(cap_s, base_s * (2 ** min(attempt, 30))))


def retry_after_s(header: str | None) -> float | None:
    """Seconds from a Retry-After header of delay-seconds; None when absent or a date."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


def next_wait_s(
    attempt: int,
    retry_after: float | None,
    remaining_s: float,
    base_s: float,
    cap_s: float,
    uniform: float,
) -> float | None:
    """How long to wait before attempt `attempt + 1`, or None when the deadline leaves no
    room for it. Retry-After, when given, is honoured (plus a little jitter)."""
    if retry_after is not None:
        wait = retry_after + uniform * base_s
    else:
        wait = backoff_s(attempt, base_s, cap_s, uniform)
    if wait >= remaining_s:
        return None
    return wait

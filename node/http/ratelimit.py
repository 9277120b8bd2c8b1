"""Per-tenant rate limits: a token bucket per tenant, so a noisy tenant cannot starve the rest.

Policy is pure: `TokenBucket.take(cost, now)` says whether the cost fits and, if not, how
long until it would. Each node keeps its own buckets, so a tenant spread over M nodes gets up
to M times its rate in all; a request is charged where it arrives, before anything applies.
A batch costs one token per operation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from node.base.config import Config
from node.base.errors import ClientError


class RateLimited(ClientError):
    status = 429
    type = "rate-limited"
    title = "Too many requests for this tenant"

    def headers(self) -> dict[str, str]:
        retry = self.extra.get("retry_after_s")
        found = {
            "RateLimit-Limit": f"{self.extra['limit']:g}",
            "RateLimit-Remaining": "0",
        }
        if retry is not None:
            found["Retry-After"] = found["RateLimit-Reset"] = str(retry)
        return found


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # most tokens held
    tokens: float
    updated: float  # when `tokens` was last brought up to date

    def take(self, cost: float, now: float) -> tuple[bool, float]:
        """(True, 0) and the tokens are spent, or (False, seconds until they would fit)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if cost <= self.tokens:
            self.tokens -= cost
            return True, 0.0
        if cost > self.burst:
            return False, math.inf
        return False, (cost - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, config: Config) -> None:
        self.rate, self.burst = config.rate_limit_per_s, config.rate_limit_burst
        self.overrides = config.rate_limit_table()
        self.buckets: dict[str, TokenBucket] = {}
        self.limited: dict[str, int] = {}  # requests refused per tenant, for metrics

    def charge(self, tenant: str, cost: int, now: float | None = None) -> None:
        """Spend `cost` tokens of the tenant's bucket, or raise RateLimited (429)."""
        rate, burst = self.overrides.get(tenant, (self.rate, self.burst))
        if rate <= 0:
            return  # no limit
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(tenant)
        if bucket is None:
            bucket = self.buckets[tenant] = TokenBucket(rate, burst, burst, now)
        ok, wait_s = bucket.take(cost, now)
        if not ok:
            self.limited[tenant] = self.limited.get(tenant, 0) + 1
            retry = (
                "no retry helps: the request is larger than the burst" if wait_s == math.inf else ""
            )
            raise RateLimited(
                retry or f"tenant {tenant!r} is over {rate:g} operations/s; retry later",
                retry_after_s=None if wait_s == math.inf else math.ceil(wait_s),
                limit=rate,
                burst=burst,
            )

"""Token buckets with time as an argument: rate, burst, overrides, and what a 429 says."""

from __future__ import annotations

import pytest

from node.base.config import Config, ConfigError
from node.http.middleware import problem_response
from node.http.ratelimit import RateLimited, RateLimiter, TokenBucket


def test_a_bucket_spends_its_burst_then_refills_at_its_rate():
    bucket = TokenBucket(rate=10, burst=5, tokens=5, updated=0.0)
    assert [bucket.take(1, 0.0)[0] for _ in range(6)] == [True] * 5 + [False]
    ok, wait = bucket.take(1, 0.0)
    assert not ok and wait == pytest.approx(0.1)
    assert bucket.take(1, 0.1) == (True, 0.0)
    assert bucket.take(2, 10.0) == (True, 0.0)  # refills to the burst, no further
    assert bucket.take(4, 10.0)[0] is False
    assert bucket.take(6, 100.0)[1] == float("inf")  # larger than the burst: never fits


def _limiter(**settings: object) -> RateLimiter:
    return RateLimiter(Config(node_id="n1", auth="none", **settings).validate())  # type: ignore[arg-type]


def test_tenants_have_separate_buckets_and_overrides_win():
    limiter = _limiter(
        rate_limit_per_s=1, rate_limit_burst=2, rate_limit_overrides="big=100:100,tiny=1"
    )
    limiter.charge("noisy", 2, now=0.0)
    with pytest.raises(RateLimited) as refused:
        limiter.charge("noisy", 1, now=0.0)
    limiter.charge("calm", 2, now=0.0)  # another tenant is not affected
    limiter.charge("big", 100, now=0.0)
    with pytest.raises(RateLimited):
        limiter.charge("tiny", 2, now=0.0)
    response = problem_response(refused.value)
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert response.headers["RateLimit-Limit"] == "1"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert limiter.limited == {"noisy": 1, "tiny": 1}


def test_zero_turns_limits_off_and_bad_overrides_are_refused():
    limiter = _limiter(rate_limit_per_s=0)
    for _ in range(1000):
        limiter.charge("anyone", 1000, now=0.0)
    for bad in ("acme", "acme=fast", "=5", "acme=0:1", "acme=5:0"):
        with pytest.raises(ConfigError, match="rate-limit-overrides"):
            Config(node_id="n1", auth="none", rate_limit_overrides=bad).validate()


def test_the_default_lets_one_tenant_run_a_node_flat_out_but_still_limits():
    """A lone tenant sending batches of 100 at 90,000 operations/s (about the most a node
    does on two cores) is never refused by default; one at twice the rate soon is."""
    limiter = _limiter()
    for step in range(3 * 900):  # 3 s of 900 batches/s
        limiter.charge("bench", 100, now=step / 900)
    with pytest.raises(RateLimited):
        for step in range(3 * 2000):
            limiter.charge("flood", 100, now=step / 2000)

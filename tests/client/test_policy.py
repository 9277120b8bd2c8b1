"""The client's pure parts: back-off and Retry-After, the coalescing buffer, typed errors."""

from __future__ import annotations

import itertools

import pytest
from counters_client import errors, retry
from counters_client.buffer import Coalescer

from node import app  # every error class of the node, as a running node has them
from node.http.problems import catalogue

assert app  # imported for its error classes


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    assert retry.backoff_s(0, 0.05, 2.0, 0.0) == 0.0
    assert retry.backoff_s(0, 0.05, 2.0, 0.999) == pytest.approx(0.04995)
    assert retry.backoff_s(3, 0.05, 2.0, 0.5) == pytest.approx(0.2)
    assert retry.backoff_s(50, 0.05, 2.0, 0.999) == pytest.approx(1.998)


def test_retry_after_is_honoured_and_the_deadline_bounds_every_wait() -> None:
    assert retry.retry_after_s("3") == 3.0
    assert retry.retry_after_s(None) is None
    assert retry.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry.next_wait_s(0, 3.0, 10.0, 0.05, 2.0, 0.0) == 3.0
    assert retry.next_wait_s(0, 3.0, 2.0, 0.05, 2.0, 0.0) is None  # would pass the deadline
    assert retry.next_wait_s(5, None, 0.01, 0.05, 2.0, 0.9) is None
    assert all(retry.retryable(s) for s in (429, 502, 503, 504))
    assert not any(retry.retryable(s) for s in (400, 401, 403, 404, 409, 422, 500))


def _clock() -> float:
    return 0.0


def test_adds_of_one_counter_are_summed_until_taken() -> None:
    buffer = Coalescer(max_buffer=10, clock=_clock, sample_every=2)
    for delta in (1, 2, -5):
        buffer.add("ns", "a", delta)
    buffer.add("ns", "b", 7)
    buffer.add("other", "a", 1)
    assert (buffer.count, buffer.adds, buffer.size) == (3, 5, 3)
    generation = buffer.take()
    assert generation is not None
    # every 2nd add is timed (the clock says 0.0): the 2nd and 4th adds
    assert generation.ops == {
        "ns": {"a": [-2, 3, [0.0]], "b": [7, 1, [0.0]]},
        "other": {"a": [1, 1, None]},
    }
    assert (generation.count, generation.adds) == (3, 5)
    assert buffer.take() is None
    assert (buffer.count, buffer.size) == (0, 3)  # in flight still counts against the bound
    buffer.settle(3)
    assert buffer.size == 0


def test_a_flush_may_take_the_oldest_part_and_leave_the_rest_summing() -> None:
    buffer = Coalescer(max_buffer=10, clock=_clock)
    for namespace, name in [("x", "a"), ("x", "b"), ("y", "c"), ("y", "d"), ("y", "e")]:
        buffer.add(namespace, name, 1)
    first = buffer.take(3)
    assert first is not None and first.ops == {"x": {"a": [1, 1, None], "b": [1, 1, None]},
                                                "y": {"c": [1, 1, None]}}  # fmt: skip
    buffer.add("y", "d", 1)
    buffer.add("x", "a", 1)  # taken earlier: a new entry, behind the older ones
    assert (buffer.count, buffer.adds, buffer.size) == (3, 4, 6)
    assert buffer.take(0) is None
    second = buffer.take(2)
    assert second is not None and second.ops == {"y": {"d": [2, 2, None], "e": [1, 1, None]}}
    rest = buffer.take(100)
    assert rest is not None and rest.ops == {"x": {"a": [1, 1, None]}}
    assert (buffer.count, buffer.adds, buffer.size) == (0, 0, 6)


def test_a_partial_flush_takes_the_heaviest_counters_and_the_oldest() -> None:
    buffer = Coalescer(max_buffer=10, clock=_clock)
    for name in "abcdef":
        buffer.add("ns", name, 1)
    for name in "cee" + "ffff":  # c reaches 2 adds, e 3 (level 2), f 5 (level 4)
        buffer.add("ns", name, 1)
    first = buffer.take(4)  # the two heaviest, then the two oldest
    assert first is not None
    assert first.ops == {"ns": {"f": [5, 5, None], "c": [2, 2, None], "a": [1, 1, None],
                                "b": [1, 1, None]}}  # fmt: skip
    second = buffer.take(2)  # e's mark at level 2 was passed over for f at level 4
    assert second is not None and second.ops == {"ns": {"e": [3, 3, None], "d": [1, 1, None]}}
    for name in "gaah":  # a was taken before: heavy again in its new entry
        buffer.add("ns", name, 1)
    third = buffer.take(2)
    assert third is not None and third.ops == {"ns": {"a": [2, 2, None], "g": [1, 1, None]}}
    rest = buffer.take()
    assert rest is not None and rest.ops == {"ns": {"h": [1, 1, None]}} and buffer.marks == 0


def test_the_bound_counts_pending_and_in_flight_counters() -> None:
    buffer = Coalescer(max_buffer=3, clock=_clock)
    for name in "abc":
        buffer.add("ns", name, 1)
    with pytest.raises(errors.BufferFull):
        buffer.add("ns", "d", 1)
    buffer.add("ns", "a", 1)  # a counter already pending takes no more room
    buffer.take()
    with pytest.raises(errors.BufferFull):
        buffer.add("ns", "d", 1)
    buffer.settle(3)
    buffer.add("ns", "d", 1)


@pytest.mark.parametrize(
    ("namespace", "name", "delta", "error"),
    [
        ("ns", "a..b", 1, errors.InvalidName),
        ("bad/ns", "a", 1, errors.InvalidName),
        ("ns", "", 1, errors.InvalidName),
        ("ns", "a", 1.5, errors.InvalidDelta),
        ("ns", "a", True, errors.InvalidDelta),
        ("ns", "a", 1 << 63, errors.InvalidDelta),
    ],
)
def test_what_the_node_would_refuse_is_refused_at_add(namespace, name, delta, error) -> None:
    buffer = Coalescer(max_buffer=10, clock=_clock)
    buffer.add("ns", "a", 5)
    before = buffer.take()
    buffer.add("ns", "a", (1 << 63) - 1 if delta == 1 << 63 else 5)
    with pytest.raises(error):
        buffer.add(namespace, name, delta)
    after = buffer.take()
    assert before is not None and after is not None
    assert after.adds == 1  # nothing of the refused add stayed


def test_a_sum_leaving_int64_is_refused_and_leaves_the_entry() -> None:
    buffer = Coalescer(max_buffer=10, clock=_clock)
    buffer.add("ns", "a", (1 << 63) - 1)
    with pytest.raises(errors.InvalidDelta):
        buffer.add("ns", "a", 1)
    generation = buffer.take()
    assert generation is not None and generation.ops["ns"]["a"] == [(1 << 63) - 1, 1, None]


def test_every_problem_type_the_node_answers_has_a_class() -> None:
    for slug, (status, _title, _text) in catalogue().items():
        error = errors.from_problem(status, {"type": f"/problems/{slug}", "status": status})
        assert type(error) is errors.BY_SLUG.get(slug), slug
        assert isinstance(error, errors.ServerError if status >= 500 else errors.ClientError)
        assert error.status == status


def test_unknown_problems_fall_back_to_the_status_family() -> None:
    assert type(errors.from_problem(418, {"type": "/problems/teapot"})) is errors.ClientError
    assert type(errors.from_problem(599, "not json")) is errors.ServerError
    in_doubt = errors.from_problem(503, {"type": "/problems/in-doubt", "may_have_applied": True})
    assert isinstance(in_doubt, errors.QuorumUnavailable) and in_doubt.may_have_applied
    assert not errors.from_problem(400, {"type": "/problems/invalid-body"}).may_have_applied


def test_problem_pages_are_relative_paths_the_node_serves() -> None:
    from node.base.errors import TYPE_BASE, QuorumTimeout

    assert TYPE_BASE == "/problems/"
    assert QuorumTimeout().to_problem()["type"] == "/problems/quorum-timeout"
    slugs = set(catalogue())
    assert {"in-doubt", "rate-limited", "quota-exceeded", "too-large"} <= slugs
    assert all(not slug.startswith("http") for slug in itertools.chain(slugs))

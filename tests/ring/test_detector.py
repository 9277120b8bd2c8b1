"""FailureDetector: suspects after timeout_s of silence, with time passed in, never slept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ring.detector import FailureDetector


def test_suspects_after_more_than_the_timeout() -> None:
    detector = FailureDetector(timeout_s=5.0).heard("a", 100.0).heard("b", 103.0)
    assert detector.suspects(105.0) == frozenset()
    assert detector.suspects(105.5) == {"a"}
    assert detector.suspects(108.5) == {"a", "b"}
    assert detector.heard("a", 106.0).suspects(108.5) == {"b"}


def test_exactly_the_timeout_is_not_yet_suspect() -> None:
    assert FailureDetector(2.0).heard("a", 10.0).suspects(12.0) == frozenset()


def test_last_heard_and_forget() -> None:
    detector = FailureDetector(1.0).heard("a", 3.0)
    assert detector.last_heard("a") == 3.0
    assert detector.last_heard("b") is None
    assert detector.forget("a").last_heard("a") is None
    assert detector.forget("zzz") == detector
    assert detector.forget("a").suspects(100.0) == frozenset()


def test_an_older_reading_does_not_rewind() -> None:
    detector = FailureDetector(1.0).heard("a", 10.0).heard("a", 4.0)
    assert detector.last_heard("a") == 10.0


def test_values_are_immutable() -> None:
    detector = FailureDetector(1.0)
    detector.heard("a", 1.0)
    assert detector.last_heard("a") is None
    with pytest.raises(TypeError):
        detector.heard_at["a"] = 1.0  # type: ignore[index]
    assert hash(detector.heard("a", 1.0)) == hash(FailureDetector(1.0).heard("a", 1.0))


@pytest.mark.parametrize("timeout_s", [0, -1.0, math.nan, math.inf, True, "1"])
def test_bad_timeouts_are_refused(timeout_s: object) -> None:
    with pytest.raises(ValueError):
        FailureDetector(timeout_s)  # type: ignore[arg-type]


def test_bad_times_are_refused() -> None:
    with pytest.raises(ValueError):
        FailureDetector(1.0).heard("a", math.nan)
    with pytest.raises(ValueError):
        FailureDetector(1.0).suspects(math.inf)


@given(
    st.floats(0.1, 60.0),
    st.lists(st.tuples(st.sampled_from("abcde"), st.floats(0.0, 1000.0)), max_size=20),
    st.floats(0.0, 2000.0),
)
def test_suspects_matches_a_model(
    timeout_s: float, readings: list[tuple[str, float]], now: float
) -> None:
    detector = FailureDetector(timeout_s)
    latest: dict[str, float] = {}
    for node, at in readings:
        detector = detector.heard(node, at)
        latest[node] = max(at, latest.get(node, at))
    assert detector.suspects(now) == {n for n, at in latest.items() if now - at > timeout_s}

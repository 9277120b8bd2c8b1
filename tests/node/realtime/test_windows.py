"""Windowed changes (node/realtime/windows.py): spans parse strictly, and a window's change,
total and per-name changes equal a model that keeps every (minute, name, delta) added."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from node.realtime.windows import (
    MAX_SPAN_MIN,
    MINUTE_MS,
    BadSpan,
    NamespaceWindow,
    Windows,
    first_minute,
    parse_span,
    span_text,
)


@pytest.mark.parametrize(
    ("text", "minutes"), [("1m", 1), ("15m", 15), ("1h", 60), ("90m", 90), ("24h", 1440)]
)
def test_spans_parse_in_minutes(text: str, minutes: int) -> None:
    assert parse_span(text) == minutes
    assert parse_span(span_text(minutes)) == minutes


@pytest.mark.parametrize(
    "text", ["", "0m", "25h", "1441m", "15", "15s", "1d", "-1m", "01m", "1.5h", " 1m", "1M", "1m "]
)
def test_bad_spans_are_refused(text: str) -> None:
    with pytest.raises(BadSpan):
        parse_span(text)


def test_a_window_covers_the_trailing_minutes_and_the_current_one() -> None:
    now = 100 * MINUTE_MS + 5_000  # 5 s into minute 100
    assert first_minute(now, 15) == 85  # 85 .. 100: 15 whole minutes and 5 s
    window = NamespaceWindow()
    window.add(84, "a", 1)
    window.add(85, "a", 2)
    window.add(100, "a", 4)
    assert window.change("a", first_minute(now, 15)) == 6
    assert window.total(first_minute(now, 16), "") == 7


adds = st.lists(
    st.tuples(st.integers(0, 3000), st.sampled_from(["a", "ab", "b:1", "b:2"]), st.integers(-5, 5)),
    max_size=60,
)


@given(adds, st.integers(1, MAX_SPAN_MIN), st.sampled_from(["", "a", "b:", "b:1", "z"]))
@example([(0, "a", 1), (1441, "a", 2)], MAX_SPAN_MIN, "")
def test_window_sums_equal_the_model(
    added: list[tuple[int, str, int]], span: int, prefix: str
) -> None:
    added.sort(key=lambda item: item[0])  # the tap's clock: minutes arrive in order
    windows = Windows()
    for minute, name, delta in added:
        windows.add(3, "t", "ns", name, minute, delta)
    now_ms = (added[-1][0] if added else 0) * MINUTE_MS + 1
    windows.prune(now_ms)  # drops only what no span reaches
    first = first_minute(now_ms, span)
    window = windows.get(3, "t", "ns")
    model: dict[str, int] = {}
    for minute, name, delta in added:
        if minute >= first and name.startswith(prefix):
            model[name] = model.get(name, 0) + delta
    if window is None:
        assert not any(model.values())
        return
    assert window.changes(first, prefix) == model
    assert window.total(first, prefix) == sum(model.values())
    for name in ("a", "ab", "b:1"):
        if name.startswith(prefix):
            assert window.change(name, first) == model.get(name, 0)


def test_prune_forgets_what_no_window_reaches_and_empty_windows() -> None:
    windows = Windows()
    windows.add(1, "t", "ns", "a", 10, 1)
    windows.add(1, "t", "ns", "a", 2000, 1)
    windows.prune(2000 * MINUTE_MS)
    window = windows.get(1, "t", "ns")
    assert window is not None and window.minutes == [2000]
    windows.prune(4000 * MINUTE_MS)
    assert windows.get(1, "t", "ns") is None and windows.entries() == 0


def test_a_clock_stepping_back_adds_to_the_newest_bucket() -> None:
    window = NamespaceWindow()
    window.add(10, "a", 1)
    window.add(9, "a", 2)
    assert window.minutes == [10] and window.change("a", 10) == 3


steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["a", "b", "c:1", "c:2"]), st.integers(-4, 4)),
        st.tuples(st.just("tick"), st.just(""), st.integers(1, 4)),
        st.tuples(st.just("top"), st.sampled_from(["", "c:"]), st.integers(1, 4)),
    ),
    max_size=80,
)


@given(steps, st.integers(1, 6))
@example([("add", "a", 2), ("top", "", 2), ("tick", "", 3), ("add", "a", -2), ("top", "", 2)], 2)
def test_a_ranking_kept_as_changes_arrive_equals_a_scan(
    script: list[tuple[str, str, int]], span: int
) -> None:
    """Made by a first query, then updated by adds and rolled forward by later queries, a
    ranking always answers what a scan of the window's buckets answers."""
    window = NamespaceWindow()
    minute = 100
    for step, text, number in script:
        if step == "add":
            window.add(minute, text, number)
        elif step == "tick":
            minute += number
        else:
            first = minute - span
            ranking = window.ranking(span, first, minute * MINUTE_MS)
            assert ranking is not None
            scanned = window.changes(first, text)
            model = sorted(
                ((n, c) for n, c in scanned.items() if c), key=lambda item: (-item[1], item[0])
            )
            assert ranking.top(text, number) == model[:number]
            assert window.ranking(span, first - 1, minute * MINUTE_MS) is None  # older clock
    window.prune(minute + 1, (minute + 11) * MINUTE_MS)  # reaching pruned buckets: dropped
    assert not window.rankings

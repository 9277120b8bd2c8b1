"""Top-by-change rankings kept per namespace window (node/realtime/windows.py) stay at
MAX_RANKINGS however many spans are asked, so a change updates a bounded number of them,
and answers are what an unbounded set of rankings answered: for kept and evicted spans
alike, equal to a brute-force sum of every change in the span."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hypothesis import example, given
from hypothesis import strategies as st

from node.realtime.query import By, Kind, Query
from node.realtime.ranking import MAX_RANKINGS
from node.realtime.windows import MAX_SPAN_MIN, MINUTE_MS, NamespaceWindow
from tests.node.realtime.test_service import SHARDS, setup

Change = tuple[int, str, int]  # (minute, name, delta)


def brute_top(changes: list[Change], first: int, prefix: str, k: int) -> list[tuple[str, int]]:
    """The k largest nonzero net changes since minute `first`, from every change made."""
    net: dict[str, int] = defaultdict(int)
    for minute, name, delta in changes:
        if minute >= first and name.startswith(prefix):
            net[name] += delta
    return sorted(((n, c) for n, c in net.items() if c), key=lambda item: (-item[1], item[0]))[:k]


def window_top(
    window: NamespaceWindow, span: int, first: int, now_ms: int, prefix: str, k: int
) -> list[tuple[str, int]]:
    """What the service answers from one window: its ranking, or a scan when the ranking
    is past `first` (service.py, _top_by_change)."""
    ranking = window.ranking(span, first, now_ms)
    if ranking is not None:
        return ranking.top(prefix, k)
    scanned = window.changes(first, prefix)
    return sorted(((n, c) for n, c in scanned.items() if c), key=lambda item: (-item[1], item[0]))[
        :k
    ]


def test_every_span_asked_through_the_service_keeps_the_bound_and_exact_answers() -> None:
    """The review's attack in small: one tenant asks every span 1m .. 24h by change."""
    store, tap, realtime, clock = setup()
    clock.ms += MAX_SPAN_MIN * MINUTE_MS  # every span begins after minute 0: observed whole
    realtime.observe(clock.ms)
    start_minute = clock.ms // MINUTE_MS
    changes: list[Change] = []
    values: dict[str, int] = defaultdict(int)
    for step in range(90):  # a change of a different size per counter and minute
        for i in range(step % 7, 40, 7):
            name, delta = f"v:{i}", (i * 13 + step * 7) % 23 - 9
            store.increment_slot(("t", "ns", name), "a:1", delta)
            changes.append((clock.ms // MINUTE_MS, name, delta))
            values[name] += delta
        asyncio.run(tap.turn())
        clock.ms += MINUTE_MS
    assert realtime.windows is not None
    windows = list(realtime.windows.windows())
    assert len(windows) == SHARDS

    def top(span: int, k: int = 5) -> list[tuple[str, int, int]]:
        query = Query(
            Kind.TOP, "t", "ns", by=By.CHANGE, span_min=span, k=k,
            at_ms=clock.ms, shards=tuple(range(SHARDS)), strict=True,
        )  # fmt: skip
        asyncio.run(realtime.prepare(query))
        return realtime.answer(query).top

    def expected(span: int, k: int = 5) -> list[tuple[str, int, int]]:
        first = clock.ms // MINUTE_MS - span
        return [(name, values[name], change) for name, change in brute_top(changes, first, "", k)]

    for span in range(1, MAX_SPAN_MIN + 1):
        assert top(span) == expected(span), span
        for window in windows:
            assert len(window.rankings) <= MAX_RANKINGS
    kept = list(range(MAX_SPAN_MIN - MAX_RANKINGS + 1, MAX_SPAN_MIN + 1))
    for window in windows:
        assert list(window.rankings) == kept  # the most recently asked, oldest first
    # A change now updates MAX_RANKINGS rankings per window, not one per span ever asked.
    store.increment_slot(("t", "ns", "v:3"), "a:1", 50)
    changes.append((clock.ms // MINUTE_MS, "v:3", 50))
    values["v:3"] += 50
    asyncio.run(tap.turn())
    # Evicted spans (made again, replacing the least recently asked) and kept ones (rolled
    # forward a minute later), whose first minute is before, within and after the changes.
    for advance, spans in ((0, (1, 2, 30, 60, 89, 90, 91, 120, MAX_SPAN_MIN, 5)), (1, (60, 1, 7))):
        clock.ms += advance * MINUTE_MS
        for span in spans:
            assert top(span, k=40) == expected(span, k=40), span
            for window in windows:
                assert len(window.rankings) <= MAX_RANKINGS
                assert next(reversed(window.rankings)) == span  # the last asked is kept
    assert clock.ms // MINUTE_MS - start_minute == 91


steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["a", "b", "c:1", "c:2"]), st.integers(-4, 4)),
        st.tuples(st.just("tick"), st.just(""), st.integers(1, 4)),
        # (span, how many minutes the asker's clock is behind this node's)
        st.tuples(st.just("top"), st.sampled_from(["", "c:"]), st.integers(1, 14)),
        st.tuples(st.just("late"), st.sampled_from(["", "c:"]), st.integers(1, 14)),
    ),
    max_size=120,
)


@given(steps, st.integers(1, 4))
@example([("top", "", s) for s in range(1, 10)] + [("add", "a", 3), ("top", "", 1)], 2)
@example([("add", "a", 2), ("top", "", 3), ("tick", "", 2), ("late", "", 3)], 1)
def test_bounded_rankings_answer_what_every_change_summed_answers(
    script: list[tuple[str, str, int]], k: int
) -> None:
    """Whatever spans are asked, in whatever order, with asker clocks behind or not, at
    most MAX_RANKINGS rankings are kept and every answer equals the brute-force one."""
    window = NamespaceWindow()
    changes: list[Change] = []
    minute = 100
    for step, text, number in script:
        if step == "add":
            window.add(minute, text, number)
            changes.append((minute, text, number))
        elif step == "tick":
            minute += number
        else:
            span = number
            first = minute - span - (2 if step == "late" else 0)
            got = window_top(window, span, first, minute * MINUTE_MS, text, k)
            assert got == brute_top(changes, first, text, k)
        assert len(window.rankings) <= MAX_RANKINGS

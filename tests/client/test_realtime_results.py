"""The typed results of the real-time reads, from the node's JSON (node/http/realtime_routes.py
and openapi_realtime.py say its shape): with and without a window, complete or not."""

from __future__ import annotations

from counters_client import Aggregate, Top, TopEntry, Windowed


def test_a_windowed_read() -> None:
    body = {"namespace": "n", "name": "v", "value": 9, "consistency": "quorum"}
    window = {"span": "15m", "change": 3, "rate_per_s": 0.003333}
    assert Windowed.from_json({**body, "window": window}) == Windowed(9, 3, 0.003333, "15m")
    partial = {**window, "complete": False, "observed_since_ms": 1_700_000_000_000}
    got = Windowed.from_json({**body, "window": partial})
    assert (got.complete, got.observed_since_ms) == (False, 1_700_000_000_000)


def test_aggregates_with_and_without_a_window() -> None:
    plain = {"namespace": "n", "prefix": "a:", "counters": 2, "total": -5}
    assert Aggregate.from_json(plain) == Aggregate("n", "a:", 2, -5)
    windowed = {**plain, "window": {"span": "1h", "change": 7}, "complete": False,
                "observed_since_ms": 12}  # fmt: skip
    assert Aggregate.from_json(windowed) == Aggregate("n", "a:", 2, -5, 7, "1h", False, 12)


def test_top_keeps_the_order_and_the_changes() -> None:
    body = {
        "namespace": "n",
        "prefix": "",
        "by": "change",
        "window": {"span": "1h"},
        "top": [{"name": "b", "value": 3, "change": 9}, {"name": "a", "value": 5, "change": 2}],
    }
    top = Top.from_json(body)
    assert top.entries == (TopEntry("b", 3, 9), TopEntry("a", 5, 2))
    assert (top.span, top.complete, list(top.as_dict())) == ("1h", True, ["b", "a"])
    by_value = Top.from_json({**body, "by": "value", "top": [{"name": "a", "value": 5}]})
    assert by_value.entries == (TopEntry("a", 5, None),) and by_value.by == "value"

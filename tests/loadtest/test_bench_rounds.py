"""bench.py's --rounds: each figure's median over the rounds that measured it, and each ratio
taken within a round before its median, so one slow round moves neither."""

from __future__ import annotations

from loadtest.bench_rounds import median_ratios, medians


def _row(system: str, scenario: str, ops: float, cpu: float | None = None) -> dict:
    return {
        "system": system,
        "scenario": scenario,
        "connections": 15,
        "ops_per_s": ops,
        "p99_ms": ops / 1000,
        "errors": 0,
        "cpu_us_per_request": cpu,
        "wrk": {"requests": int(ops)},
    }


def test_each_figure_is_its_median_over_the_rounds_in_first_seen_order():
    rounds = [
        [_row("n3", "batch", 100, 60.0), _row("baseline", "batch", 300)],
        [_row("n3", "batch", 900, 50.0), _row("baseline", "batch", 200)],
        [_row("n3", "batch", 200, 70.0), _row("baseline", "batch", 100)],
    ]

    n3, baseline = medians(rounds)

    assert (n3["system"], baseline["system"]) == ("n3", "baseline")
    assert n3["ops_per_s"] == 200 and n3["p99_ms"] == 0.2 and n3["cpu_us_per_request"] == 60.0
    assert baseline["ops_per_s"] == 200
    assert n3["connections"] == 15 and n3["rounds"] == 3
    assert n3["errors"] == 0 and isinstance(n3["errors"], int)  # a count stays a count
    assert "wrk" not in n3  # one run's raw output does not stand for the medians


def test_a_failed_run_is_left_out_and_a_row_no_round_measured_stays_failed():
    failed = {"system": "n3", "scenario": "batch", "failed": "wrk gave no result"}
    rounds = [
        [failed, {"system": "n1", "scenario": "batch", "failed": "n1 died"}],
        [_row("n3", "batch", 400), {"system": "n1", "scenario": "batch", "failed": "again"}],
        [_row("n3", "batch", 600)],
    ]

    n3, n1 = medians(rounds)

    assert n3["ops_per_s"] == 500 and n3["rounds"] == 2 and "failed" not in n3
    assert n1 == {"system": "n1", "scenario": "batch", "failed": "n1 died"}


def test_a_ratio_is_the_median_of_the_rounds_ratios_not_a_ratio_of_medians():
    # round by round: 1.0x, 3.0x, 2.0x; the ops/s medians (200 over 100) would say 2.0x too,
    # so the second group tells them apart: 0.5x, 0.5x, 4.0x -> 0.5x, not 1.0x
    summaries = [
        {"vs_baseline": {"batch": 1.0, "reads": 0.5}, "n3_vs_n1": {"batch": None}},
        {"vs_baseline": {"batch": 3.0, "reads": 0.5}, "n3_vs_n1": {"batch": None}},
        {"vs_baseline": {"batch": 2.0, "reads": 4.0}, "n3_vs_n1": {"batch": 0.7}},
    ]

    summary = median_ratios(summaries)

    assert summary["vs_baseline"] == {"batch": 2.0, "reads": 0.5}
    assert summary["n3_vs_n1"] == {"batch": 0.7}  # the rounds that have it


def test_one_round_reports_its_own_figures():
    rounds = [[_row("n3", "batch", 123, 45.0)]]

    (n3,) = medians(rounds)

    assert n3["ops_per_s"] == 123 and n3["cpu_us_per_request"] == 45.0 and n3["rounds"] == 1
    summary = {"vs_baseline": {"batch": None}}
    assert median_ratios([summary]) == {"vs_baseline": {"batch": None}}

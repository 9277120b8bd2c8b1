"""Medians over bench.py's rounds (`--rounds N`): each system's figures, and each ratio taken
within a round first.

On a shared machine one run of a system moves by up to 2x from the next, and more from one
minute to the next than between two systems measured in the same minutes. So each ratio
is taken within each round (the systems of one round run one after another), and the
median of those is its figure. Pure: no I/O.
"""

from __future__ import annotations

import statistics
from typing import Any

COUNTS = frozenset({"connections", "errors", "non2xx"})  # a row's figures that count things


def _figure(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def medians(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (system, scenario), in first-seen order: each numeric figure the median
    over the rounds whose run did not fail (of a count, the lower median: still a count),
    the other fields the first such run's, plus `rounds` (how many runs the medians took).
    A row no round measured keeps the first failure."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for results in rounds:
        for row in results:
            runs.setdefault((row["system"], row["scenario"]), []).append(row)
    out: list[dict[str, Any]] = []
    for found in runs.values():
        ok = [row for row in found if "failed" not in row]
        if not ok:
            out.append(found[0])
            continue
        row = {k: v for k, v in ok[0].items() if k != "wrk"}  # wrk's raw output is per run
        for name, value in ok[0].items():
            if _figure(value):
                values = [r[name] for r in ok if _figure(r.get(name))]
                median = statistics.median_low if name in COUNTS else statistics.median
                row[name] = median(values)
        row["rounds"] = len(ok)
        out.append(row)
    return out


def median_ratios(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each ratio of bench_report.ratios (a group of name -> ratio or None) as its median
    over the rounds that have it; None where no round does."""
    out: dict[str, Any] = {}
    for summary in summaries:
        for group, named in summary.items():
            into = out.setdefault(group, {})
            for name, value in named.items():
                into.setdefault(name, [])
                if value is not None:
                    into[name].append(value)
    return {
        group: {name: statistics.median(v) if v else None for name, v in named.items()}
        for group, named in out.items()
    }

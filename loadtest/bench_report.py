"""bench.py's report: the table of wrk runs, their ratios and issue 13's targets, and the
client scenario's table (bench_client.py's, issue 15) with its goal, from the results.

The client scenario's rows carry different figures (adds acknowledged per second, add() to
acknowledged times, CPU per add) from the wrk rows (requests, their latencies, CPU per
request), so they get a table of their own below the wrk one.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench_client import SCENARIO as CLIENT_SCENARIO
from bench_client import report_lines


def wrk_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r["scenario"] != CLIENT_SCENARIO]


def _find(results: list[dict[str, Any]], system: str, scenario: str) -> dict[str, Any] | None:
    for result in results:
        if result["system"] == system and result["scenario"] == scenario and "failed" not in result:
            return result
    return None


def _ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    if numerator is None or denominator is None or not denominator["ops_per_s"]:
        return None
    return float(numerator["ops_per_s"] / denominator["ops_per_s"])


def ratios(results: list[dict[str, Any]], counters: str) -> dict[str, Any]:
    """Ratios of the wrk runs' ops/s (and CPU), and of the client scenario's adds/s to the
    baseline's."""
    client = {r["system"]: r for r in results if r["scenario"] == CLIENT_SCENARIO}
    results = wrk_results(results)
    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    systems = sorted({r["system"] for r in results})
    return {
        "vs_baseline": {
            s: _ratio(_find(results, counters, s), _find(results, "baseline", s)) for s in scenarios
        },
        "n3_vs_n1": {
            s: _ratio(_find(results, "n3", s), _find(results, "n1", s)) for s in scenarios
        },
        "redis_vs_embedded": {
            s: _ratio(_find(results, "n3redis", s), _find(results, "n3", s)) for s in scenarios
        },
        "hot_vs_uniform": {
            system: _ratio(
                _find(results, system, "hot_key"), _find(results, system, "increment_uniform")
            )
            for system in systems
        },
        # CPU per op of a keyed batch over a plain one (issue 11: at most 1.5x)
        "keyed_vs_unkeyed_cpu": {
            system: _cpu_ratio(
                _find(results, system, "keyed_batch_uniform"),
                _find(results, system, "batch_uniform"),
            )
            for system in systems
            if system != "baseline"  # the baseline has no idempotency
        },
        "client_adds_vs_baseline": {
            system: _adds_ratio(row, client.get("baseline"))
            for system, row in client.items()
            if system != "baseline"
        },
    }


def _adds_ratio(row: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    if "failed" in row or baseline is None or "failed" in baseline:
        return None
    return float(row["adds_per_s"] / baseline["adds_per_s"]) if baseline["adds_per_s"] else None


def _cpu_ratio(
    numerator: dict[str, Any] | None, denominator: dict[str, Any] | None
) -> float | None:
    """CPU µs per request of one scenario over another's (same ops per request)."""
    if numerator is None or denominator is None:
        return None
    top, bottom = numerator.get("cpu_us_per_request"), denominator.get("cpu_us_per_request")
    return None if not top or not bottom else float(top / bottom)


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'system':<9}{'scenario':<19}{'req/s':>10}{'ops/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    head += f"{'errors':>8}{'non2xx':>8}{'vs base':>9}{'CPU us/req':>11}"
    lines = [head, "-" * len(head)]
    for r in results:
        label = f"{r['system']:<9}{r['scenario']:<19}"
        if "failed" in r:
            lines.append(f"{label}FAILED: {r['failed'][:70]}")
            continue
        base = _find(results, "baseline", r["scenario"])
        vs_base = "-" if r["system"] == "baseline" else _fmt_ratio(_ratio(r, base))
        lines.append(
            f"{label}{r['requests_per_s']:>10,.0f}{r['ops_per_s']:>11,.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['errors']:>8}{r['non2xx']:>8}{vs_base:>9}"
            f"{_fmt_cpu(r.get('cpu_us_per_request')):>11}"
        )
    return "\n".join(lines)


def _fmt_cpu(us: float | None) -> str:
    return "-" if us is None else f"{us:,.0f}"


def _target_line(label: str, ok: bool | None, detail: str) -> str:
    verdict = "n/a " if ok is None else ("met " if ok else "MISS")
    return f"  [{verdict}] {label}: {detail}"


def _p99(result: dict[str, Any] | None) -> str:
    return "-" if result is None else f"{result['p99_ms']:.1f} ms"


def targets(results: list[dict[str, Any]], counters: str, summary: dict[str, Any]) -> list[str]:
    lines = []
    # issue 13's goals
    for name, want in (("increment_uniform", 1.3), ("read_uniform", 1.5)):
        ratio, mine = summary["vs_baseline"].get(name), _find(results, counters, name)
        ok = None if ratio is None or mine is None else ratio >= want and mine["p99_ms"] < 20
        detail = f"{_fmt_ratio(ratio)} baseline, p99 {_p99(mine)} (want >= {want}x, < 20 ms)"
        lines.append(_target_line(name, ok, detail))
    for name in ("batch_uniform", "batch_zipf"):
        ratio, mine = summary["vs_baseline"].get(name), _find(results, counters, name)
        ok = None
        if mine is not None and ratio is not None:
            ok = mine["ops_per_s"] >= 100_000 and ratio >= 1.6 and mine["p99_ms"] < 50
        rate = "-" if mine is None else f"{mine['ops_per_s']:,.0f}"
        detail = f"{rate} increments/s, {_fmt_ratio(ratio)} baseline, p99 {_p99(mine)}"
        lines.append(_target_line(name, ok, detail + " (want >= 100,000/s, 1.6x, < 50 ms)"))
    for name, ratio in summary["n3_vs_n1"].items():
        if name.startswith("batch"):
            ok = None if ratio is None else ratio >= 0.6
            detail = f"{_fmt_ratio(ratio)} (want >= 0.60x)"
            lines.append(_target_line(f"N=3 vs N=1 {name}", ok, detail))
    for name, ratio in summary["redis_vs_embedded"].items():
        if ratio is not None:
            detail = f"{_fmt_ratio(ratio)} of n3's ops/s (want >= 0.80x)"
            lines.append(_target_line(f"Redis durable vs embedded {name}", ratio >= 0.8, detail))
    for system, ratio in summary["hot_vs_uniform"].items():
        # Only Counters has the hot-key target; the other systems' ratios are for context.
        ok = None if ratio is None or system != counters else ratio >= 1.0
        detail = f"{_fmt_ratio(ratio)} of increment_uniform"
        detail += " (want >= 1.00x)" if system == counters else " (context)"
        lines.append(_target_line(f"hot key vs uniform, {system}", ok, detail))
    for system, ratio in summary["keyed_vs_unkeyed_cpu"].items():
        ok = None if ratio is None else ratio <= 1.5
        detail = f"{_fmt_ratio(ratio)} CPU per op of batch_uniform (want <= 1.50x)"
        lines.append(_target_line(f"keyed vs unkeyed batch, {system}", ok, detail))
    return lines


def client_table(results: list[dict[str, Any]], client_args: argparse.Namespace) -> list[str]:
    """The client scenario's rows as bench_client.py prints them (goal and ratio included);
    a failed system is one line."""
    found = [r for r in results if r["scenario"] == CLIENT_SCENARIO]
    rows = [(r["system"], r) for r in found if "failed" not in r]
    lines = ["", *report_lines(rows, client_args)] if rows else []
    lines += [f"{r['system']} {CLIENT_SCENARIO} FAILED: {r['failed'][:70]}" for r in found
              if "failed" in r]  # fmt: skip
    return lines


def report(
    results: list[dict[str, Any]],
    summary: dict[str, Any],
    problems: dict[str, Any],
    counters: str,
    client_args: argparse.Namespace,
) -> str:
    wrk = wrk_results(results)
    lines = [table(wrk)] if wrk else []
    lines += client_table(results, client_args)
    lines += ["", f"ratios of ops/s ({counters} unless named):"]
    lines += targets(wrk, counters, summary)
    lines.append("")
    for system, nodes in problems.items():
        for node, found in nodes.items():
            lines.append(f"{system}/{node} log: {found['count']} warning/error/traceback lines")
            lines += [f"    {line[:200]}" for line in found["first"][:3]]
    return "\n".join(lines)

"""The fault suite's nemesis run: real nodes in network namespaces, faults, a checker.

`pytest` runs the short seeded run (about a minute); `make faults` sets FAULTS_FULL=1 and runs
the whole schedule instead. FAULTS_SEED=<seed> repeats a run (the seed is printed first).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.run import fault_run, full_plan, seed_from_env, short_plan


def _verdict(report_text: str, violations: list[str], missed: list[str]) -> None:
    assert not violations, "correctness broken:\n" + "\n".join(violations) + "\n" + report_text
    assert not missed, "targets missed:\n" + "\n".join(missed) + "\n" + report_text


@pytest.mark.faults_short
@pytest.mark.timeout(300)
async def test_a_short_seeded_run_keeps_every_promise(tmp_path: Path) -> None:
    report = await fault_run(tmp_path, short_plan(seed_from_env()))
    _verdict(report.table(), report.violations, report.targets_missed)


@pytest.mark.faults_full
@pytest.mark.timeout(1200)
async def test_the_whole_schedule_keeps_every_promise(tmp_path: Path) -> None:
    report = await fault_run(tmp_path, full_plan(seed_from_env()))
    _verdict(report.table(), report.violations, report.targets_missed)

"""The pure parts of the fault suite: schedules, sides of a partition, outcomes, bounds and
the availability table, so a run's verdict can be trusted."""

from __future__ import annotations

import random
from dataclasses import replace

from tests.faults import checker, drops, nemesis
from tests.faults.workload import OpRecord, Outcome, bounds, classify

NAMES = ["n1", "n2", "n3"]


def record(sent: float, node: str, level: str, outcome: Outcome, delta: int = 1) -> OpRecord:
    return OpRecord(sent, sent + 0.01, node, level, False, "c", delta, outcome, None)


def test_a_seed_gives_the_same_schedule_and_every_kind_once() -> None:
    first = nemesis.schedule(42, 5, nemesis.ALL_KINDS)
    assert first == nemesis.schedule(42, 5, nemesis.ALL_KINDS)
    assert sorted(f.kind for f in first) == sorted(nemesis.ALL_KINDS)
    others = [nemesis.schedule(seed, 5, nemesis.ALL_KINDS) for seed in range(5)]
    assert any(schedule != first for schedule in others)


def test_the_minority_of_each_partition() -> None:
    assert nemesis.cut_off(drops.isolate(1, 3), 3) == {1}
    assert nemesis.cut_off(drops.cut([0, 4], [1, 2, 3]), 5) == {0, 4}
    assert nemesis.cut_off(drops.one_way([2], [0, 1]), 3) == {2}  # no reply gets out of it
    assert nemesis.cut_off(drops.bridge(0, [1, 2], [3, 4]), 5) == set()  # all reach 3 of 5


def test_a_bridge_cuts_the_sides_apart_but_not_from_the_middle() -> None:
    pairs = drops.bridge(0, [1], [2])
    assert pairs == {(1, 2), (2, 1)}


def test_what_each_answer_says_about_an_op() -> None:
    assert classify(200, {}) is Outcome.OK
    assert classify(422, {}) is Outcome.FAILED
    assert classify(503, {"may_have_applied": False}) is Outcome.FAILED
    assert classify(503, {"may_have_applied": True}) is Outcome.UNKNOWN
    assert classify(504, None) is Outcome.UNKNOWN
    assert classify(500, "oops") is Outcome.UNKNOWN


def test_bounds_widen_by_unknown_ops_of_either_sign() -> None:
    records = [
        record(0, "n1", "one", Outcome.OK, 5),
        record(0, "n1", "one", Outcome.UNKNOWN, -2),
        record(0, "n1", "one", Outcome.UNKNOWN, 3),
        record(0, "n1", "one", Outcome.FAILED, 100),
    ]
    assert bounds(records, "c") == (3, 8)


def test_availability_by_side_and_the_time_back_to_full_service() -> None:
    split = nemesis.make_fault("isolate", random.Random(1), 3)
    isolated = NAMES[split.target]
    kept = [n for n in NAMES if n != isolated]
    window = nemesis.Window(split, started=10.0, healed=20.0, quiet_until=30.0)
    records = [
        record(11, kept[0], "quorum", Outcome.OK),
        record(12, kept[1], "quorum", Outcome.UNKNOWN),
        record(13, isolated, "quorum", Outcome.FAILED),
        record(14, isolated, "one", Outcome.OK),
        record(21, kept[0], "all", Outcome.FAILED),  # 1 s after the heal
        record(26, kept[0], "all", Outcome.OK),
    ]
    report = checker.Report()
    checker.availability(report, records, [window], NAMES)
    assert report.by_level_side["quorum", "majority"].ok == 1
    assert report.by_level_side["quorum", "majority"].total == 2
    assert report.by_level_side["quorum", "minority"].total == 1
    assert report.one_by_node[isolated].share == 1.0
    assert report.heals == [(split.describe(NAMES), 1.0, 1)]
    assert [m for m in report.targets_missed if "quorum writes" in m]  # 50% < 97%
    assert "quorum" in report.table()


def test_writes_still_failing_at_the_end_of_the_quiet_time_miss_the_target() -> None:
    fault = nemesis.Fault("pause", 0)
    window = nemesis.Window(fault, 0.0, healed=1.0, quiet_until=9.0, down=frozenset({0}))
    report = checker.Report()
    checker.availability(report, [record(8.5, "n2", "all", Outcome.UNKNOWN)], [window], NAMES)
    assert report.heals[0][1] is None
    assert report.targets_missed


def test_keyed_writes_count_in_rows_of_their_own_not_in_the_one_target() -> None:
    """A keyed op needs a majority's grants at any level: on a minority side it is refused
    by design, so it is shown apart and does not count against plain `one` availability."""
    split = nemesis.make_fault("isolate", random.Random(1), 3)
    isolated = NAMES[split.target]
    window = nemesis.Window(split, started=10.0, healed=20.0, quiet_until=30.0)
    records = [
        record(11, isolated, "one", Outcome.OK),
        replace(record(12, isolated, "one", Outcome.FAILED), keyed=True),
    ]
    report = checker.Report()
    checker.availability(report, records, [window], NAMES)
    assert report.one_by_node[isolated].share == 1.0
    assert report.by_level_side["one keyed", "minority"].total == 1
    assert not [m for m in report.targets_missed if "`one`" in m]
    assert "one keyed" in report.table()

"""Which windows an observation answers (node/realtime/coverage.py): from its start, outside
its restores' gaps; catch-up takes another's buckets only when they answer strictly more and
no gap of theirs reaches past the cut."""

from __future__ import annotations

from node.realtime.coverage import Observation, better, cut_minute
from node.realtime.windows import MINUTE_MS

M = 1_000  # a minute number


def test_a_restore_leaves_a_gap_only_when_a_window_could_begin_inside_it() -> None:
    whole = Observation(0)
    quick = whole.restored((M * MINUTE_MS) + 10_000, (M * MINUTE_MS) + 50_000)
    assert quick == whole  # P and the restart in one minute: every window still exact
    edge = whole.restored(M * MINUTE_MS + 50_000, (M + 1) * MINUTE_MS + 5_000)
    assert edge.gaps == ((M, M + 2),)  # the tail may lie in M or M + 1: a window from M + 1
    assert edge.start_for(M + 1) == M + 2 and edge.start_for(M) == M
    long = whole.restored(M * MINUTE_MS + 50_000, (M + 10) * MINUTE_MS + 5_000)
    assert long.gaps == ((M, M + 11),)
    assert [long.start_for(f) for f in (M - 5, M, M + 1, M + 10, M + 11, M + 12)] == [
        M - 5, M, M + 11, M + 11, M + 11, M + 12,
    ]  # fmt: skip
    assert long.live_cut() == M + 11


def test_gaps_chain_and_go_once_no_window_can_begin_in_them() -> None:
    observed = Observation(0, ((M, M + 3), (M + 2, M + 6)))
    assert observed.start_for(M + 1) == M + 6  # out of the first gap into the second
    assert observed.pruned(M + 3).gaps == ((M + 2, M + 6),)
    assert observed.pruned(M + 6).gaps == ()


def test_the_start_counts_from_the_next_minute_boundary() -> None:
    assert cut_minute(M * MINUTE_MS) == M and cut_minute(M * MINUTE_MS + 1) == M + 1
    late = Observation((M + 1) * MINUTE_MS)
    assert late.start_for(M) == M + 1 and late.start_for(M + 4) == M + 4


def test_catch_up_takes_only_what_answers_strictly_more() -> None:
    cut = M + 20
    late = Observation(cut * MINUTE_MS)  # observed from its cut: any earlier one is better
    assert better(Observation(0), late, cut)
    assert better(Observation((M + 5) * MINUTE_MS), late, cut)
    assert not better(late, late, cut)
    # restored with a gap: the one persisted later (a smaller gap) is better, not the reverse
    early_p, late_p = Observation(0, ((M, M + 20),)), Observation(0, ((M + 15, M + 20),))
    assert better(late_p, early_p, cut) and not better(early_p, late_p, cut)
    assert better(Observation(0), early_p, cut)  # no gap at all: better still
    # a gap ending after the cut: its tail may hold what this one observed live after it
    assert not better(Observation(0, ((M + 18, M + 25),)), late, cut)
    # neither covers the other's windows: keep ours
    assert not better(Observation((M + 2) * MINUTE_MS), Observation(0, ((M, M + 3),)), cut)

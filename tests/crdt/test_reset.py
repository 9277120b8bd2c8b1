"""Reset as an observed floor: it clears what it saw, keeps what it did not, and merges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt.pncounter import FLOOR_SUFFIX, PNCounter
from tests.crdt.strategies import actors, pncounters

increments = st.lists(st.tuples(actors, st.integers(-1000, 1000)), max_size=8)


def _apply(state: PNCounter, ops: list[tuple[str, int]]) -> PNCounter:
    for actor, delta in ops:
        state = state.increment(actor, delta)
    return state


@given(pncounters())
def test_a_reset_state_reads_zero_and_a_second_reset_changes_nothing(state):
    reset = state.reset()
    assert reset.value() == 0
    assert reset.reset() == reset
    assert reset.merge(state) == reset  # the reset includes everything it observed


@given(pncounters(), increments, increments)
def test_increments_the_reset_did_not_observe_survive_the_merge(state, before, concurrent):
    observed = _apply(state, before)
    elsewhere = _apply(observed, concurrent)  # another replica, after what the reset saw
    merged = observed.reset().merge(elsewhere)
    assert merged.value() == elsewhere.value() - observed.value()
    assert merged == elsewhere.merge(observed.reset())  # reset merges like any state


@given(pncounters(), increments)
def test_the_counter_stays_usable_after_a_reset(state, after):
    reset = state.reset()
    assert _apply(reset, after).value() == sum(delta for _, delta in after)


@given(pncounters(), pncounters())
def test_resets_on_two_replicas_merge_to_the_union_of_what_they_cleared(left, right):
    merged = left.reset().merge(right.reset())
    assert merged.value() == 0
    assert not any(a.endswith(FLOOR_SUFFIX * 2) for a in merged.actors())

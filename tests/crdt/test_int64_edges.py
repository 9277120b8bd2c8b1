"""The int64 rule and full slots (crdt/pncounter.py's docstring): no reachable state is
refused by the codec or by receipts, only deltas that move the value out of int64 are
refused, and a delta refused for a full slot is taken under a fresh actor."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter, SlotFullError, codec, saturate
from crdt.gcounter import UINT64_MAX
from crdt.pncounter import INT64_MAX, INT64_MIN
from crdt.receipts import Receipt
from tests.crdt.strategies import pncounters

int64s = st.integers(INT64_MIN, INT64_MAX)
any_ints = st.integers(-(2**70), 2**70)
full_range_states = pncounters(max_count=UINT64_MAX)


@given(any_ints)
@example(INT64_MAX + 1)
@example(INT64_MIN - 1)
@example(INT64_MAX)
@example(INT64_MIN)
def test_saturate_clamps_to_int64_and_says_so(value: int):
    clamped, outside = saturate(value)
    assert INT64_MIN <= clamped <= INT64_MAX
    assert outside == (not INT64_MIN <= value <= INT64_MAX)
    if not outside:
        assert clamped == value
    else:
        assert clamped == (INT64_MAX if value > 0 else INT64_MIN)


@given(full_range_states, full_range_states)
def test_every_state_of_uint64_slots_encodes_and_reports_an_int64(a: PNCounter, b: PNCounter):
    for state in (a, b, a.merge(b)):
        assert codec.decode(codec.encode(state)) == state
        reported, outside = state.saturated_value()
        assert (reported, outside) == saturate(state.value())
        receipt = Receipt(1, "n1:1", "fp", reported)
        assert Receipt.from_wire(receipt.to_wire()) == receipt


@given(int64s, st.lists(int64s, min_size=1, max_size=6), st.lists(int64s, min_size=1, max_size=6))
@example(INT64_MAX - 10, [10], [10])
def test_concurrent_increments_merge_to_a_state_every_peer_takes(
    start: int, deltas_a: list[int], deltas_b: list[int]
):
    base = PNCounter.empty().increment("base", start)
    replicas = []
    for actor, deltas in (("a", deltas_a), ("b", deltas_b)):
        state = base
        for delta in deltas:
            try:
                state = state.increment(actor, delta)
            except SlotFullError:
                pass  # the node would rotate; what matters here is the merged state
            except CounterOverflowError:
                pass
        replicas.append(state)
    merged = replicas[0].merge(replicas[1])
    assert codec.decode(codec.encode(merged)) == merged
    assert codec.decode_batch(codec.encode_batch([(("t", "n", "k"), merged)])) == [
        (("t", "n", "k"), merged)
    ]
    assert INT64_MIN <= merged.saturated_value()[0] <= INT64_MAX


@given(int64s, int64s)
def test_an_increment_is_refused_only_when_it_leaves_int64(start: int, delta: int):
    state = PNCounter.empty().increment("base", start)
    if INT64_MIN <= start + delta <= INT64_MAX:
        assert state.increment("fresh", delta).value() == start + delta
    else:
        with pytest.raises(CounterOverflowError) as raised:
            state.increment("fresh", delta)
        assert not isinstance(raised.value, SlotFullError)


def _outside() -> PNCounter:
    a = PNCounter.empty().increment("a", INT64_MAX - 10)
    b = PNCounter.empty().increment("b", INT64_MAX - 10)
    merged = a.merge(b)
    assert merged.value() == 2 * (INT64_MAX - 10)
    assert merged.saturated_value() == (INT64_MAX, True)
    return merged


def test_outside_int64_deltas_away_are_refused_and_deltas_back_are_taken():
    state = _outside()
    with pytest.raises(CounterOverflowError):
        state.increment("a", 1)
    closer = state.increment("a", -5)
    assert closer.value() == state.value() - 5
    assert closer.saturated_value() == (INT64_MAX, True)
    back = closer.increment("c", -(closer.value() - 7))
    assert back.saturated_value() == (7, False)


def test_a_full_slot_is_its_own_error_and_a_fresh_actor_takes_the_delta():
    big = 2**62
    state = PNCounter.empty()
    for _ in range(3):  # p and n of "a" at 3 * 2**62 each; a fourth would be 2**64
        state = state.increment("a", big).increment("a", -big)
    assert state.value() == 0
    with pytest.raises(SlotFullError):
        state.increment("a", big)
    with pytest.raises(SlotFullError):
        state.increment("a", -big)
    fresh = state.increment("a:2", big)
    assert fresh.value() == big
    assert fresh.slot("a") == (3 * big, 3 * big)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40))
@example([2**62, -(2**62)] * 10)
@example([INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX])
def test_rotating_on_a_full_slot_accepts_every_in_range_delta_forever(deltas: list[int]):
    """The model is a plain integer: every delta that keeps it in int64 is accepted."""
    state, model, incarnation = PNCounter.empty(), 0, 1
    for delta in deltas:
        if not INT64_MIN <= model + delta <= INT64_MAX:
            with pytest.raises(CounterOverflowError):
                state.increment(f"n:{incarnation}", delta)
            continue
        try:
            state = state.increment(f"n:{incarnation}", delta)
        except SlotFullError:
            incarnation += 1
            state = state.increment(f"n:{incarnation}", delta)  # a fresh slot always takes it
        model += delta
        assert state.value() == model

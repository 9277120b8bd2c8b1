"""PNCounter: the API's edges, int64 and uint64 limits, and its refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crdt.errors import CounterOverflowError
from crdt.gcounter import UINT64_MAX, GCounter
from crdt.pncounter import INT64_MAX, INT64_MIN, PNCounter


def test_empty() -> None:
    empty = PNCounter.empty()
    assert empty.value() == 0
    assert empty.is_empty()
    assert empty.actors() == frozenset()
    assert empty is PNCounter.empty()
    assert empty == PNCounter(GCounter.empty(), GCounter.empty())


def test_increments_and_decrements_go_to_their_halves() -> None:
    pn = PNCounter.empty().increment("a", 5).increment("a", -2).increment("b", -7)
    assert pn.value() == -4
    assert pn.slot("a") == (5, 2)
    assert pn.slot("b") == (0, 7)
    assert pn.slot("nobody") == (0, 0)
    assert pn.actors() == frozenset({"a", "b"})
    assert not pn.is_empty()


def test_zero_delta_returns_self() -> None:
    pn = PNCounter.empty().increment("a", 1)
    assert pn.increment("a", 0) is pn


@pytest.mark.parametrize("delta", [True, False, 1.0, -1.0, float("nan"), "1", None, Decimal(1)])
def test_non_int_delta_is_a_type_error(delta: object) -> None:
    with pytest.raises(TypeError):
        PNCounter.empty().increment("a", delta)  # type: ignore[arg-type]


def test_value_past_int64_max_overflows_and_changes_nothing() -> None:
    top = PNCounter.empty().increment("a", INT64_MAX)
    assert top.value() == INT64_MAX
    with pytest.raises(CounterOverflowError):
        top.increment("b", 1)
    assert top.value() == INT64_MAX
    assert top.increment("b", -1).value() == INT64_MAX - 1


def test_value_below_int64_min_overflows_and_changes_nothing() -> None:
    bottom = PNCounter.empty().increment("a", INT64_MIN)
    assert bottom.value() == INT64_MIN
    with pytest.raises(CounterOverflowError):
        bottom.increment("a", -1)
    assert bottom.value() == INT64_MIN
    assert bottom.increment("a", 1).value() == INT64_MIN + 1


def test_slot_past_uint64_overflows_even_when_the_value_fits() -> None:
    pn = PNCounter(GCounter({"a": UINT64_MAX}), GCounter({"b": UINT64_MAX}))
    assert pn.value() == 0
    with pytest.raises(CounterOverflowError):
        pn.increment("a", 1)
    with pytest.raises(CounterOverflowError):
        pn.increment("b", -1)
    assert pn.slot("a") == (UINT64_MAX, 0)
    assert pn.slot("b") == (0, UINT64_MAX)


def test_merge_returns_a_dominating_argument_itself() -> None:
    old = PNCounter.empty().increment("a", 1)
    new = old.increment("a", -1)
    assert old.merge(new) is new
    assert new.merge(old) is new
    other = PNCounter.empty().increment("b", 2)
    merged = new.merge(other)
    assert merged.value() == 2
    assert merged.slot("a") == (1, 1)


def test_delta_since() -> None:
    old = PNCounter.empty().increment("a", 3).increment("b", -1)
    new = old.increment("a", -2).increment("c", 4)
    delta = new.delta_since(old)
    assert delta == PNCounter(GCounter({"c": 4}), GCounter({"a": 2}))
    assert old.merge(delta) == new
    assert new.delta_since(new) is PNCounter.empty()
    assert new.delta_since(PNCounter.empty()) is new


def test_equal_states_hash_equal() -> None:
    one = PNCounter.empty().increment("a", 1).increment("b", -1)
    two = PNCounter.empty().increment("b", -1).increment("a", 1)
    assert one == two
    assert hash(one) == hash(two)


def test_from_slot_is_the_one_actor_state_and_merges_as_a_delta():
    state = PNCounter.empty().increment("a", 7).increment("a", -2).increment("b", 4)
    slot = PNCounter.from_slot("a", *state.slot("a"))
    assert slot == state.delta_since(PNCounter.empty().increment("b", 4))
    assert PNCounter.from_slot("a", 0, 0).is_empty()
    for bad in (-1, 2**64, True):
        with pytest.raises(CounterOverflowError):
            PNCounter.from_slot("a", bad, 0)

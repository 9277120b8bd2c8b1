"""GCounter: the API's edges, its fast paths and its refusals."""

from __future__ import annotations

import enum
from decimal import Decimal

import pytest

from crdt.errors import CounterOverflowError, CrdtError
from crdt.gcounter import UINT64_MAX, GCounter


def test_empty_is_zero_and_shared() -> None:
    empty = GCounter.empty()
    assert empty.value() == 0
    assert len(empty) == 0
    assert empty.actors() == frozenset()
    assert empty is GCounter.empty()
    assert empty == GCounter({})


def test_increment_adds_to_its_actor_only() -> None:
    g = GCounter.empty().increment("a", 3).increment("b", 4).increment("a", 5)
    assert g.value() == 12
    assert (g.get("a"), g.get("b"), g.get("zzz")) == (8, 4, 0)
    assert g.actors() == frozenset({"a", "b"})
    assert len(g) == 2


def test_increment_leaves_the_original_untouched() -> None:
    before = GCounter.empty().increment("a", 1)
    after = before.increment("a", 1)
    assert before.get("a") == 1
    assert after.get("a") == 2


def test_increment_by_zero_returns_self() -> None:
    g = GCounter({"a": 1})
    assert g.increment("a", 0) is g
    assert g.increment("new", 0) is g


def test_negative_amount_is_a_value_error() -> None:
    with pytest.raises(ValueError) as info:
        GCounter.empty().increment("a", -1)
    assert not isinstance(info.value, CrdtError)


class Small(enum.IntEnum):
    TWO = 2


@pytest.mark.parametrize("amount", [True, False, 1.0, "1", None, Decimal(1)])
def test_non_int_amount_is_a_type_error(amount: object) -> None:
    with pytest.raises(TypeError):
        GCounter.empty().increment("a", amount)  # type: ignore[arg-type]


def test_int_subclass_amount_is_accepted_as_a_plain_int() -> None:
    g = GCounter.empty().increment("a", Small.TWO)
    assert g.get("a") == 2
    assert type(g.get("a")) is int


def test_slot_past_uint64_overflows_and_changes_nothing() -> None:
    full = GCounter.empty().increment("a", UINT64_MAX)
    with pytest.raises(CounterOverflowError):
        full.increment("a", 1)
    with pytest.raises(CounterOverflowError):
        GCounter.empty().increment("a", UINT64_MAX + 1)
    assert full.get("a") == UINT64_MAX
    # Another actor's slot is independent of the full one.
    assert full.increment("b", 1).value() == UINT64_MAX + 1


def test_merge_takes_the_per_actor_maximum() -> None:
    left = GCounter({"a": 5, "b": 1})
    right = GCounter({"b": 3, "c": 2})
    assert left.merge(right) == GCounter({"a": 5, "b": 3, "c": 2})


def test_merge_returns_the_dominating_argument_itself() -> None:
    small = GCounter({"a": 1})
    big = GCounter({"a": 2, "b": 1})
    assert small.merge(big) is big
    assert big.merge(small) is big
    same_size = GCounter({"a": 3, "b": 1})
    assert big.merge(same_size) is same_size
    assert same_size.merge(big) is same_size
    assert big.merge(big) is big
    assert big.merge(GCounter.empty()) is big


def test_merge_does_not_mutate_its_arguments() -> None:
    left_slots = {"a": 1, "b": 5}
    right_slots = {"a": 4}
    GCounter(left_slots).merge(GCounter(right_slots))
    assert left_slots == {"a": 1, "b": 5}
    assert right_slots == {"a": 4}


def test_delta_since_keeps_only_grown_slots() -> None:
    older = GCounter({"a": 5, "b": 1})
    newer = GCounter({"a": 5, "b": 4, "c": 1})
    assert newer.delta_since(older) == GCounter({"b": 4, "c": 1})
    assert newer.delta_since(newer) is GCounter.empty()
    assert newer.delta_since(GCounter.empty()) is newer
    # Slots where the newer side is behind are not shipped.
    assert older.delta_since(newer) == GCounter.empty()


def test_equal_states_are_equal_and_hash_equal() -> None:
    one = GCounter.empty().increment("a", 1).increment("b", 2)
    two = GCounter.empty().increment("b", 2).increment("a", 1)
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two, GCounter.empty()}) == 2
    assert one != GCounter({"a": 1})


def test_frozen() -> None:
    g = GCounter.empty()
    with pytest.raises(AttributeError):
        g.slots = {"a": 1}  # type: ignore[misc]

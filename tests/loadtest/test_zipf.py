"""The Zipf key picker of the Locust users: ranks in range, in order, with Zipf's weights."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.zipf import cumulative, rank

draws = st.floats(0.0, 1.0, exclude_max=True)


@given(st.integers(1, 3000), st.floats(0.1, 3.0), draws, draws)
def test_draws_pick_ranks_in_range_and_in_order(count: int, s: float, u: float, v: float):
    table = cumulative(count, s)
    low, high = sorted((u, v))
    assert 0 <= rank(table, low) <= rank(table, high) < count


def test_each_rank_is_picked_by_a_share_of_draws_that_falls_as_one_over_rank_to_the_s():
    table = cumulative(3, 1.0)  # weights 1, 1/2, 1/3 of 11/6: shares 6/11, 3/11, 2/11
    assert table == pytest.approx([6 / 11, 9 / 11, 1.0]) and table[-1] == 1.0
    edge = 1e-9  # either side of each bound, clear of rounding in the table
    draws = (0.0, 6 / 11 - edge, 6 / 11 + edge, 9 / 11 - edge, 9 / 11 + edge, 1 - edge)
    assert [rank(table, u) for u in draws] == [0, 0, 1, 1, 2, 2]
    table = cumulative(100, 1.1)
    shares = [b - a for a, b in zip([0.0, *table[:-1]], table, strict=True)]
    assert shares == pytest.approx([shares[0] / (r + 1) ** 1.1 for r in range(100)])


def test_a_table_needs_a_key_and_a_positive_exponent():
    for count, s in ((0, 1.1), (10, 0.0)):
        with pytest.raises(ValueError):
            cumulative(count, s)

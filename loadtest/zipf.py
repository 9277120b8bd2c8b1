"""Zipf-skewed ranks for hot keys: rank r (0 is the hottest) has weight 1 / (r + 1) ** s.

Pure: the caller draws the uniform number, so the picker is tested without randomness.
With s = 1.1 over 10,000 keys, rank 0 takes about 15% of the picks (as in the wrk scripts).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence


def cumulative(count: int, s: float) -> list[float]:
    """The cumulative probabilities of ranks 0 to count - 1; the last one is exactly 1."""
    if count < 1 or s <= 0:
        raise ValueError("a Zipf table needs count >= 1 and s > 0")
    weights = [1.0 / (rank + 1) ** s for rank in range(count)]
    total = sum(weights)
    table = [running / total for running in itertools.accumulate(weights)]
    table[-1] = 1.0  # no rounding gap above the last rank
    return table


def rank(table: Sequence[float], uniform: float) -> int:
    """The rank a uniform draw in [0, 1) picks from a `cumulative()` table."""
    return min(bisect.bisect_right(table, uniform), len(table) - 1)

"""Idempotency receipts: the first attempt wins everywhere, merges obey the laws."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import receipts
from crdt.errors import CodecError
from crdt.receipts import Receipt

receipt_values = st.builds(
    Receipt,
    at_ms=st.integers(0, 10_000),
    actor=st.sampled_from(["n1:1", "n2:4"]),
    fingerprint=st.sampled_from(["aa", "bb"]),
    value=st.integers(-(2**63), 2**63 - 1),
)
maps = st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), receipt_values, max_size=3)


@given(maps, maps, maps)
def test_merge_is_associative_commutative_idempotent(a, b, c):
    assert receipts.merge(a, receipts.merge(b, c)) == receipts.merge(receipts.merge(a, b), c)
    assert receipts.merge(a, b) == receipts.merge(b, a)
    assert receipts.merge(a, a) == a


@given(maps, maps)
def test_the_first_attempt_wins_for_every_key(a, b):
    merged = receipts.merge(a, b)
    for key, receipt in merged.items():
        assert receipt == min(r for r in (a.get(key), b.get(key)) if r is not None)


@given(maps)
def test_wire_round_trip_and_prune_drops_only_old_receipts(a):
    assert receipts.from_wire(receipts.to_wire(a)) == a
    kept = receipts.prune(a, now_ms=6000, window_ms=1000)
    assert kept == {k: r for k, r in a.items() if r.at_ms >= 5000}


@pytest.mark.parametrize(
    "wire",
    [
        "nope",
        [["k", [1, "a", "fp"]]],
        [["k", [-1, "a", "fp", 1]]],
        [["k", [1, "", "fp", 1]]],
        [["k", [1, "a", "fp", 2**63]]],
        [["k", [1, "a", "fp", True]]],
        [["", [1, "a", "fp", 1]]],
    ],
)
def test_bad_receipts_on_the_wire_raise_codec_error(wire):
    with pytest.raises(CodecError):
        receipts.from_wire(wire)

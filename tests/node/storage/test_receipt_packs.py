"""Receipts packed one blob per request (node/storage/receipt_packs.py): a pack gives back
exactly the receipts within the window, each with its counter, shard and idempotency key;
it expires with them; and bad bytes raise one PackError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt.receipts import Receipt
from node.storage import receipt_packs
from node.storage.receipt_packs import PACK_VERSION, PackError, pack, unpack

WINDOW = 1_000
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
keys = st.tuples(names, names, names)
heads = st.tuples(
    st.integers(0, 5_000), st.sampled_from(["n1:1", "n2:7"]), st.sampled_from(["f" * 32, "g"])
)
values = st.integers(-(1 << 63), (1 << 63) - 1)
entries = st.lists(
    st.tuples(keys, st.integers(0, 255), names, heads, values).map(
        lambda e: (e[0], e[1], e[2], Receipt(e[3][0], e[3][1], e[3][2], e[4]))
    ),
    max_size=40,
)


def _unpacked(packed: list[tuple[int, int, bytes]], shards: set[int] | None = None) -> list:
    return [entry for _, _, blob in packed for entry in unpack(blob, shards)]


@given(entries, st.integers(0, 6_000))
@example([(("t", "ns", "c"), 7, "K#0", Receipt(0, "n1:1", "f", -(1 << 63)))], WINDOW)
def test_a_pack_gives_back_every_receipt_within_the_window(entries, now_ms):
    packed = pack(entries, WINDOW, now_ms)
    kept = [e for e in entries if e[3].at_ms + WINDOW >= now_ms]
    assert sorted(_unpacked(packed)) == sorted(kept)


@given(entries, st.integers(0, 6_000))
def test_a_pack_expires_with_its_receipts_and_holds_one_request_each(entries, now_ms):
    for expires_ms, count, blob in pack(entries, WINDOW, now_ms):
        found = unpack(blob)
        assert len(found) == count > 0  # no empty pack is stored
        assert {r.at_ms + WINDOW for _, _, _, r in found} == {expires_ms}
        assert expires_ms >= now_ms
        assert len({(r.at_ms, r.actor, r.fingerprint) for _, _, _, r in found}) == 1


@given(entries, st.sets(st.integers(0, 255)))
def test_unpacking_some_shards_keeps_theirs_only(entries, shards):
    packed = pack(entries, WINDOW, 0)
    assert sorted(_unpacked(packed, shards)) == sorted(e for e in entries if e[1] in shards)


def test_a_batch_of_one_request_is_one_pack_and_a_huge_one_is_capped(monkeypatch):
    one = [
        (("t", "ns", f"c{i}"), i % 256, f"K#{i}", Receipt(5, "n1:1", "f", i)) for i in range(100)
    ]
    assert len(pack(one, WINDOW, 0)) == 1
    monkeypatch.setattr(receipt_packs, "PACK_MAX_ENTRIES", 30)
    packed = pack(one, WINDOW, 0)
    assert len(packed) == 4 and sorted(_unpacked(packed)) == sorted(one)


def test_packs_share_one_key_object_per_counter():
    one = [(("t", "ns", "c"), 7, f"K#{i}", Receipt(5, "n1:1", "f", i)) for i in range(3)]
    shared: dict = {}
    found = [e for _, _, blob in pack(one, WINDOW, 0) for e in unpack(blob, None, shared)]
    assert len({id(key) for key, _, _, _ in found}) == 1


@pytest.mark.parametrize(
    "blob",
    [
        b"\xc1",  # not msgpack
        msgpack.packb([PACK_VERSION + 1, 5, "n1:1", "f", []]),
        msgpack.packb([PACK_VERSION, -5, "n1:1", "f", []]),
        msgpack.packb([PACK_VERSION, 5, "", "f", []]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", "ns", "c", 7, "K"]]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", "ns", "c", -1, "K", 1]]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", "ns", "c", 7, "", 1]]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", "ns", "c", 7, "K", 1 << 63]]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", ["ns"], "c", 7, "K", 1]]),
        msgpack.packb([PACK_VERSION, 5, "n1:1", "f", ["t", "", "c", 7, "K", 1]]),
        msgpack.packb({"v": 1}),
    ],
)
def test_a_pack_that_is_not_one_raises_pack_error(blob):
    with pytest.raises(PackError):
        unpack(blob)

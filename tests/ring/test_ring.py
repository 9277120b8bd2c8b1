"""Ring as a value: validation, queries, checksum and the wire form."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ring.ring import DEFAULT_REPLICAS, DEFAULT_SHARDS, Ring, RingError
from tests.ring.strategies import assert_well_formed, memberships, replication

ABC = Ring.build(["a", "b", "c", "d"], shards=8, replicas=2)


def test_defaults() -> None:
    ring = Ring.build(["a"])
    assert (ring.shards, ring.replicas, ring.epoch) == (DEFAULT_SHARDS, DEFAULT_REPLICAS, 0)


@pytest.mark.parametrize("shards", [0, 3, 100, 2**17, -8, True, 8.0, "8"])
def test_bad_shard_counts_are_refused(shards: Any) -> None:
    with pytest.raises(RingError):
        Ring(shards, 1, 0, ((),) * 8)


@pytest.mark.parametrize(("replicas", "epoch"), [(0, 0), (-1, 0), (True, 0), (1, -1), (1, 1.0)])
def test_bad_replicas_and_epochs_are_refused(replicas: Any, epoch: Any) -> None:
    with pytest.raises(RingError):
        Ring(2, replicas, epoch, ((), ()))


@pytest.mark.parametrize(
    "table",
    [
        (("a",),),  # too few lists
        (("a",), ("a",), ("a",)),  # too many lists
        (("a", "a"), ("a", "b")),  # duplicate in a list
        (("a", "b"), ("a",)),  # lists of different lengths
        (("a",), ("b",)),  # 2 members, N = 2: each list needs both
        (("a", ""), ("a", "b")),  # empty id
        (("a", 1), ("a", "b")),  # not a str
        [("a", "b"), ("a", "b")],  # not a tuple
        (["a", "b"], ("a", "b")),  # a list is not a tuple
    ],
)
def test_bad_tables_are_refused(table: Any) -> None:
    with pytest.raises(RingError):
        Ring(2, 2, 0, table)


def test_an_empty_ring_has_no_nodes() -> None:
    ring = Ring.build([], shards=4)
    assert ring.nodes == ()
    assert ring.preference_list(3) == ()
    assert ring.load() == {} and ring.coordinators() == {}


def test_membership_errors() -> None:
    with pytest.raises(RingError):
        Ring.build(["a", "a"])
    with pytest.raises(RingError):
        Ring.build(["a", ""])
    with pytest.raises(RingError):
        ABC.with_node("a")
    with pytest.raises(RingError):
        ABC.without_node("z")
    # One shard, one replica: a second node would hold nothing and vanish from the table.
    with pytest.raises(RingError):
        Ring.build(["a", "b"], shards=1, replicas=1)


def test_epoch_counts_changes() -> None:
    assert ABC.epoch == 0
    assert ABC.with_node("e").epoch == 1
    assert ABC.with_node("e").without_node("a").epoch == 2


def test_preference_list() -> None:
    for shard in range(ABC.shards):
        entry = ABC.preference_list(shard)
        assert entry == ABC.table[shard]
        assert ABC.preference_list(shard, 1) == entry[:1]
        assert ABC.preference_list(shard, 0) == ()
        assert ABC.preference_list(shard, 9) == entry


@pytest.mark.parametrize(("shard", "n"), [(-1, None), (8, None), (True, None), (0, -1)])
def test_preference_list_refuses_bad_arguments(shard: Any, n: Any) -> None:
    with pytest.raises(RingError):
        ABC.preference_list(shard, n)


def test_views_agree_with_the_table() -> None:
    for node in ABC.nodes:
        held = ABC.shards_of(node)
        assert held == {s for s, entry in enumerate(ABC.table) if node in entry}
        assert ABC.load()[node] == len(held)
        assert ABC.coordinators()[node] == sum(entry[0] == node for entry in ABC.table)
    assert ABC.shards_of("z") == frozenset()


def test_checksum_covers_the_placement_not_the_epoch() -> None:
    later = Ring(ABC.shards, ABC.replicas, 7, ABC.table)
    assert later != ABC
    assert later.checksum() == ABC.checksum()
    swapped = tuple(entry[::-1] for entry in ABC.table)
    assert Ring(ABC.shards, ABC.replicas, 0, swapped).checksum() != ABC.checksum()
    assert len(ABC.checksum()) == 32


def test_repr_is_short() -> None:
    text = repr(Ring.build([f"n{i}" for i in range(16)]))
    assert len(text) < 400 and "checksum=" in text


@settings(max_examples=40, deadline=None)
@given(memberships, replication, st.integers(0, 8))
def test_wire_round_trip(nodes: set[str], replicas: int, power: int) -> None:
    shards = 2**power
    if len(nodes) > shards * replicas:
        nodes = set(sorted(nodes)[: shards * replicas])
    ring = Ring.build(nodes, shards=shards, replicas=replicas)
    assert_well_formed(ring)
    assert Ring.from_wire(ring.to_wire()) == ring
    assert Ring.from_wire(json.loads(json.dumps(ring.to_wire()))) == ring
    for use_list in (True, False):
        packed = msgpack.packb(ring.to_wire())
        assert Ring.from_wire(msgpack.unpackb(packed, use_list=use_list)) == ring


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["q", "n", "epoch", "table", "x"]), inner, max_size=5)
    ),
    max_leaves=12,
)


@given(json_like)
@example({"q": 2, "n": 1, "epoch": 0, "table": [["a"], 5]})
@example({"q": 2**40, "n": 1, "epoch": 0, "table": []})
@example({"q": 1, "n": 1, "epoch": 0, "table": [[["a"]]]})
def test_from_wire_refuses_garbage_with_ring_error_only(obj: object) -> None:
    try:
        ring = Ring.from_wire(obj)
    except RingError:
        return
    assert Ring.from_wire(ring.to_wire()) == ring


@given(
    st.sampled_from(["q", "n", "epoch", "table"]),
    st.none() | st.booleans() | st.integers(-3, 300) | st.text(max_size=2) | st.lists(st.text()),
)
def test_from_wire_refuses_a_corrupted_field(key: str, value: object) -> None:
    wire = ABC.to_wire()
    wire[key] = value
    try:
        ring = Ring.from_wire(wire)
    except RingError:
        return
    assert ring.to_wire()[key] == value


def test_from_wire_ignores_unknown_fields() -> None:
    assert Ring.from_wire({**ABC.to_wire(), "future": 1}) == ABC


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.integers(1, 4), st.data())
def test_small_rings_stay_well_formed(power: int, replicas: int, data: st.DataObject) -> None:
    # Balance cannot hold with a handful of shards, but the list invariants must.
    shards = 2**power
    limit = min(shards * replicas, 10)
    nodes = data.draw(st.sets(st.text("abcdefghij", min_size=1, max_size=2), max_size=limit))
    ring = Ring.build(nodes, shards=shards, replicas=replicas)
    assert_well_formed(ring)
    assert set(ring.nodes) == nodes
    for node in sorted(nodes):
        smaller = ring.without_node(node)
        assert_well_formed(smaller)
        assert node not in smaller.nodes

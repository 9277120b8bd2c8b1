"""Membership: the transition table, the merge laws, tombstones and the wire form."""

from __future__ import annotations

import itertools
import json

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ring.membership import (
    EVENTS,
    TRANSITIONS,
    Member,
    MembershipError,
    Status,
    TransitionError,
    View,
)

# Few ids, addresses and versions, so that drawn views often disagree about the same entry.
members = st.builds(
    Member,
    node_id=st.sampled_from(["a", "b", "c"]),
    address=st.sampled_from(["10.0.0.1:7000", "10.0.0.2:7000", "[::1]:7001"]),
    status=st.sampled_from(Status),
    version=st.integers(0, 3),
)
views = st.lists(members, max_size=5).map(lambda entries: View({m.node_id: m for m in entries}))


def member(node_id: str = "a", status: Status = Status.UP, version: int = 1) -> Member:
    return Member(node_id, "127.0.0.1:7000", status, version)


def test_the_table_uses_only_known_events_and_never_loops() -> None:
    assert EVENTS == {"ready", "leave", "fail", "recover", "rejoin", "remove"}
    assert all(source != target for (source, _), target in TRANSITIONS.items())
    # Every status can be left, and REMOVED only by rejoining.
    assert {source for source, _ in TRANSITIONS} == set(Status)
    assert [e for (s, e) in TRANSITIONS if s is Status.REMOVED] == ["rejoin"]


@pytest.mark.parametrize(
    ("status", "event"), list(itertools.product(Status, sorted(EVENTS | {"bogus"})))
)
def test_every_status_and_event(status: Status, event: str) -> None:
    view = View.empty().with_member(member(status=status, version=4))
    target = TRANSITIONS.get((status, event))
    if target is None:
        with pytest.raises(TransitionError):
            view.apply("a", event)
        assert view.get("a") == member(status=status, version=4)
    else:
        after = view.apply("a", event).get("a")
        assert after == Member("a", "127.0.0.1:7000", target, 5)


def test_a_node_walks_its_lifecycle() -> None:
    view = View.empty().with_member(member(status=Status.JOINING, version=0))
    lifecycle = [
        ("ready", Status.UP),
        ("fail", Status.DOWN),
        ("recover", Status.UP),
        ("leave", Status.LEAVING),
        ("remove", Status.REMOVED),
        ("rejoin", Status.JOINING),
    ]
    for version, (event, status) in enumerate(lifecycle, start=1):
        view = view.apply("a", event)
        assert view.get("a") == member(status=status, version=version)


def test_an_unknown_node_cannot_change() -> None:
    with pytest.raises(TransitionError):
        View.empty().apply("ghost", "fail")
    assert issubclass(TransitionError, MembershipError)
    assert issubclass(MembershipError, ValueError)


@given(views, views)
def test_merge_is_commutative(a: View, b: View) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).digest() == b.merge(a).digest()


@given(views, views, views)
def test_merge_is_associative(a: View, b: View, c: View) -> None:
    assert a.merge(b.merge(c)) == a.merge(b).merge(c)


@given(views)
def test_merge_is_idempotent(a: View) -> None:
    assert a.merge(a) == a
    assert a.merge(View.empty()) == a


@given(views, members)
def test_the_higher_version_wins(view: View, entry: Member) -> None:
    newer = Member(entry.node_id, entry.address, entry.status, 10)
    assert view.with_member(newer).merge(view).get(entry.node_id) == newer
    assert view.merge(View.empty().with_member(newer)).get(entry.node_id) == newer


@given(st.sampled_from(Status), st.integers(0, 4))
def test_a_removal_is_not_undone_by_older_gossip(old_status: Status, old_version: int) -> None:
    removed = View.empty().with_member(member(status=Status.REMOVED, version=5))
    stale = View.empty().with_member(member(status=old_status, version=old_version))
    assert removed.merge(stale).get("a") == member(status=Status.REMOVED, version=5)
    assert stale.merge(removed).get("a") == member(status=Status.REMOVED, version=5)


def test_equal_versions_resolve_to_the_worse_status_then_address() -> None:
    up, down = member(status=Status.UP), member(status=Status.DOWN)
    view_up, view_down = View.empty().with_member(up), View.empty().with_member(down)
    assert view_up.merge(view_down).get("a") == down
    other = Member("a", "127.0.0.2:7000", Status.UP, 1)
    assert view_up.merge(View.empty().with_member(other)).get("a") == other


def test_live_members() -> None:
    view = View.empty()
    for node_id, status in zip("abcde", Status, strict=True):
        view = view.with_member(member(node_id, status))
    assert [m.node_id for m in view.live()] == ["a", "b", "c"]
    assert {m.status for m in view.live()} == {Status.JOINING, Status.UP, Status.LEAVING}


def test_views_are_immutable_values() -> None:
    source = {"a": member()}
    view = View(source)
    source["b"] = member("b")
    assert view.get("b") is None
    with pytest.raises(TypeError):
        view.members["b"] = member("b")  # type: ignore[index]
    assert hash(view) == hash(View({"a": member()}))
    assert view.digest() == View({"a": member()}).digest() != View.empty().digest()


@pytest.mark.parametrize(
    "fields",
    [
        ("", "h:1", Status.UP, 0),
        ("a", "h", Status.UP, 0),
        ("a", ":1", Status.UP, 0),
        ("a", "h:0", Status.UP, 0),
        ("a", "h:65536", Status.UP, 0),
        ("a", "h:²", Status.UP, 0),
        ("a", "h:1", "up", 0),
        ("a", "h:1", Status.UP, -1),
        ("a", "h:1", Status.UP, True),
        ("a", 7, Status.UP, 0),
    ],
)
def test_bad_members_are_refused(fields: tuple[object, object, object, object]) -> None:
    with pytest.raises(MembershipError):
        Member(*fields)  # type: ignore[arg-type]


def test_a_view_entry_must_be_that_nodes_member() -> None:
    with pytest.raises(MembershipError):
        View({"b": member("a")})


@given(views)
def test_wire_round_trip(view: View) -> None:
    assert View.from_wire(view.to_wire()) == view
    assert View.from_wire(json.loads(json.dumps(view.to_wire()))) == view
    assert View.from_wire(msgpack.unpackb(msgpack.packb(view.to_wire()))) == view


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["members", "id", "address", "status", "version"]), inner, max_size=5
        )
    ),
    max_leaves=15,
)


@given(json_like)
@example({"members": [{"id": "a", "address": "h:1", "status": "up", "version": 0}] * 2})
@example({"members": [{"id": "a", "address": "h:1", "status": [], "version": 0}]})
@example({"members": [{"id": "a", "address": "h:1", "status": "gone", "version": 0}]})
def test_from_wire_refuses_garbage_with_membership_error_only(obj: object) -> None:
    try:
        view = View.from_wire(obj)
    except MembershipError:
        return
    assert View.from_wire(view.to_wire()) == view

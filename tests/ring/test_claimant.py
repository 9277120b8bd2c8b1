"""The claimant's rule: build, plan a hand-off one node at a time, switch only when it is done
and a majority adopted it; the order that makes one ring win everywhere; state merge laws."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ring.claimant import (
    RingState,
    claimant,
    departed,
    derive,
    handoff_done,
    handoff_mark,
    has_room,
    next_state,
    queued,
)
from ring.membership import Member, Status, View
from ring.plan import plan
from ring.ring import Ring, RingError


def _view(**statuses: Status) -> View:
    view = View.empty()
    for index, (node_id, status) in enumerate(sorted(statuses.items())):
        view = view.with_member(Member(node_id, f"127.0.0.1:{7000 + index}", status, 1))
    return view


def _settled(*nodes: str) -> RingState:
    return RingState(replace(Ring.build(nodes, shards=64, replicas=3), epoch=3))


def test_an_empty_ring_is_built_straight_from_the_members_that_want_in():
    empty = RingState(Ring.build([], shards=64, replicas=3))
    state = next_state(empty, _view(a=Status.JOINING, b=Status.UP, c=Status.LEAVING), {})
    assert state.pending is None
    assert state.current.nodes == ("a", "b") and state.current.epoch == 1


def test_a_joiner_gets_a_pending_ring_and_the_switch_waits_for_its_hand_off():
    state = _settled("a", "b", "c")
    view = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    planned = next_state(state, view, {})
    assert planned.current == state.current
    assert planned.pending is not None and "d" in planned.pending.nodes
    assert planned.pending.epoch > state.current.epoch
    assert next_state(planned, view, {}) is planned  # nobody has caught up yet
    mark = handoff_mark(planned.pending)
    assert not handoff_done(planned, {"a": mark, "b": mark, "c": mark})  # d has not pulled
    assert not handoff_done(planned, {"d": mark, "a": mark})  # one of three adopted it
    done = {"d": mark, "a": mark, "b": mark}
    switched = next_state(planned, view, done)
    assert switched.current == planned.pending and switched.pending is None


def test_a_leaver_is_planned_out_and_marked_departed_once_it_holds_nothing():
    state = _settled("a", "b", "c", "d")
    view = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.LEAVING)
    planned = next_state(state, view, {})
    assert planned.pending is not None and "d" not in planned.pending.nodes
    assert departed(view, planned) == []  # still holds shards until the switch
    targets = {move.target for move in plan(planned.current, planned.pending)}
    synced = dict.fromkeys(targets | {"a", "b", "c"}, handoff_mark(planned.pending))
    switched = next_state(planned, view, synced)
    assert "d" not in switched.current.nodes
    assert departed(view, switched) == ["d"]


def test_a_change_during_a_hand_off_waits_behind_it_one_node_at_a_time():
    state = _settled("a", "b", "c")
    joining_d = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    planned = next_state(state, joining_d, {})
    both = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING, e=Status.JOINING)
    assert queued(planned, both) and not queued(planned, joining_d)
    assert next_state(planned, both, {"d": handoff_mark(planned.pending)}) is planned
    mark = handoff_mark(planned.pending)
    switched = next_state(planned, both, dict.fromkeys("abcd", mark))
    assert set(switched.current.nodes) == {"a", "b", "c", "d"} and switched.pending is None
    after = next_state(switched, both, {})
    assert set(after.pending.nodes) == {"a", "b", "c", "d", "e"}


def test_a_dead_node_force_removed_from_a_ring_of_two_leaves_it():
    state = _settled("a", "b")
    view = _view(a=Status.UP, b=Status.REMOVED)
    planned = next_state(state, view, {})
    assert planned.pending is not None and planned.pending.nodes == ("a",)
    switched = next_state(planned, view, {"a": handoff_mark(planned.pending)})
    assert switched.pending is None and switched.current.nodes == ("a",)


def test_leaves_that_would_empty_the_ring_wait_for_a_node_to_take_the_shards():
    """Two leaves sent at once to two nodes, each of the other, pass the admin API's check
    on each node's view; the ring must keep them (every counter still served) until a
    node joins, and then plan them out."""
    state = _settled("a", "b")
    both = _view(a=Status.LEAVING, b=Status.LEAVING)
    assert next_state(state, both, {}) is state
    assert departed(both, state) == []
    one_first = next_state(state, _view(a=Status.UP, b=Status.LEAVING), {})
    assert one_first.pending is not None and one_first.pending.nodes == ("a",)
    undone = next_state(one_first, both, {})  # a's leave came in during b's hand-off
    assert undone.pending is not None and set(undone.pending.nodes) == {"a", "b"}
    joined = _view(a=Status.LEAVING, b=Status.LEAVING, c=Status.JOINING)
    rings = []
    for _ in range(8):  # each hand-off done at once
        synced = {} if state.pending is None else dict.fromkeys("abc", handoff_mark(state.pending))
        state = next_state(state, joined, synced)
        rings.append(state.current.nodes)
    assert all(rings) and rings[-1] == ("c",), rings  # the last leaver went after c came
    assert state.pending is None and departed(joined, state) == ["a", "b"]


def test_a_join_and_a_leave_at_once_move_one_replica_per_shard_at_a_time():
    """Together they would replace two of three replicas of some shards in one hand-off:
    a pending ring in which only one replica of a shard had the state before."""
    state = _settled("a", "b", "c", "d")
    view = _view(a=Status.UP, b=Status.LEAVING, c=Status.UP, d=Status.UP, e=Status.JOINING)
    first = next_state(state, view, {})
    assert set(first.pending.nodes) == {"a", "c", "d"}  # the leaver first, the joiner queued
    for before, after in zip(first.current.table, first.pending.table, strict=True):
        assert len(set(after) - set(before)) <= 1
    assert queued(first, view)


def test_a_pending_change_no_longer_wanted_is_abandoned_for_the_next_one():
    state = _settled("a", "b", "c")
    joining_d = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    planned = next_state(state, joining_d, {})
    d_gone_e_in = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.REMOVED, e=Status.JOINING)
    replanned = next_state(planned, d_gone_e_in, {})
    assert set(replanned.pending.nodes) == {"a", "b", "c", "e"}
    assert replanned.pending.epoch > planned.pending.epoch


def test_equal_epochs_from_two_claimants_resolve_to_the_smaller_claimant_everywhere():
    state = _settled("a", "b", "c")
    view = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING, e=Status.JOINING)
    by_a = next_state(state, view, {}, "a")
    # b, cut off from a, believed itself the claimant and planned another change
    by_b = RingState(
        state.current,
        next_state(
            state, _view(a=Status.UP, b=Status.UP, c=Status.UP, e=Status.JOINING), {}
        ).pending,
        "b",
    )
    assert by_a.pending.epoch == by_b.pending.epoch and by_a.pending != by_b.pending
    assert by_a.merge(by_b) is by_a and by_b.merge(by_a) is by_a
    assert RingState(state.current, by_b.pending, "").merge(by_a) is by_a  # unknown ranks last


def test_a_resumed_claimant_cannot_override_a_newer_ring_with_its_abandoned_one():
    state = _settled("a", "b", "c")
    joining_d = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    stale = next_state(state, joining_d, {}, "a")  # a planned d's join, then was paused
    # meanwhile b (the claimant while a was down) saw d removed and e join, and switched
    moved_on = _view(a=Status.DOWN, b=Status.UP, c=Status.UP, d=Status.REMOVED, e=Status.JOINING)
    newer = next_state(stale, moved_on, {}, "b")
    mark = handoff_mark(newer.pending)
    newer = next_state(newer, moved_on, dict.fromkeys("bce", mark), "b")
    assert newer.pending is None and "e" in newer.current.nodes
    assert stale.merge(newer) is newer and newer.merge(stale) is newer
    # a resumes with its old view: from the merged state it derives nothing old
    resumed = next_state(stale.merge(newer), joining_d.merge(moved_on), {}, "a")
    assert resumed.current == newer.current
    assert resumed.pending is None or "d" not in resumed.pending.nodes


def test_down_members_keep_their_shards_and_the_claimant_is_the_smallest_live_id():
    state = _settled("a", "b", "c")
    view = _view(a=Status.UP, b=Status.DOWN, c=Status.UP)
    assert next_state(state, view, {}) is state
    assert claimant(view, frozenset({"b", "c"})) == "b"
    assert claimant(view, frozenset({"c"})) == "c"
    assert claimant(view, frozenset()) is None


states = st.builds(
    lambda nodes, epoch, grow: RingState(
        replace(Ring.build(nodes, shards=16, replicas=2), epoch=epoch),
        None
        if not grow
        else replace(Ring.build([*nodes, "z"], shards=16, replicas=2), epoch=epoch + 1),
    ),
    st.sets(st.sampled_from("abcd"), min_size=1),
    st.integers(0, 3),
    st.booleans(),
)


@given(states, states, states)
def test_ring_state_merge_is_commutative_associative_idempotent(x, y, z):
    assert x.merge(y).order_key() == y.merge(x).order_key()
    assert x.merge(y).merge(z).order_key() == x.merge(y.merge(z)).order_key()
    assert x.merge(x) is x


@given(states)
def test_ring_state_wire_round_trip(state):
    assert RingState.from_wire(state.to_wire()) == state


@pytest.mark.parametrize(
    "wire",
    [
        None,
        {"current": None},
        {"current": {"q": 16}, "pending": None},
        {
            "current": Ring.build(["a"], shards=16).to_wire(),
            "pending": Ring.build(["a"], shards=32).to_wire(),
        },
    ],
)
def test_bad_ring_state_on_the_wire_is_a_ring_error(wire):
    with pytest.raises(RingError):
        RingState.from_wire(wire)


def test_a_pending_ring_derived_again_needs_a_fresh_hand_off_mark():
    state = _settled("a", "b", "c")
    joining = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    planned = next_state(state, joining, {})
    old_mark = {"d": handoff_mark(planned.pending)}
    gone = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.REMOVED)
    abandoned = next_state(planned, gone, {})  # d went away mid hand-off
    assert abandoned.pending is not None and "d" not in abandoned.pending.nodes
    back = _view(a=Status.UP, b=Status.UP, c=Status.UP, d=Status.JOINING)
    again = next_state(abandoned, back, old_mark)
    assert again.pending is not None and again.pending.table == planned.pending.table
    assert again.pending.checksum() == planned.pending.checksum()  # the same placement...
    assert next_state(again, back, old_mark) is again  # ...but the old pull does not count
    fresh = dict.fromkeys("abcd", handoff_mark(again.pending))
    assert next_state(again, back, fresh).pending is None


def test_a_joiner_without_a_replica_to_take_waits_and_a_leave_goes_on() -> None:
    full = Ring.build(["a", "b"], shards=2, replicas=1)
    assert not has_room(full)
    assert derive(full, frozenset({"a", "b", "c"}), 9).table == full.table  # c waits
    shrunk = derive(full, frozenset({"a", "c"}), 9)  # b leaves; then c finds room
    assert set(shrunk.nodes) == {"a"} and has_room(shrunk)
    assert set(derive(shrunk, frozenset({"a", "c"}), 10).nodes) == {"a", "c"}

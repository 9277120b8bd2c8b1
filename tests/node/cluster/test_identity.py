"""The identity rule (node/cluster/identity.py): when a node may serve under its incarnation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.cluster.identity import Action, Evidence, decide

# A node back with an empty data dir (no Redis), having heard from n1 but not n3.
LOST_DISK = Evidence(
    node_id="n2",
    incarnation=2,
    seen=1,
    complete_record=False,
    durable_outside=False,
    durable_recorded=True,
    members=frozenset({"n1", "n3"}),
    reported=frozenset({"n1"}),
    announced=True,
)


def test_an_incarnation_seen_elsewhere_moves_above_the_highest_seen():
    decision = decide(replace(LOST_DISK, incarnation=1, seen=1))
    assert (decision.action, decision.incarnation) == (Action.ROTATE, 2)
    assert decide(replace(LOST_DISK, incarnation=3, seen=7)).incarnation == 8


def test_a_rotation_comes_before_every_other_reason():
    evidence = replace(LOST_DISK, seen=5, durable_outside=True, durable_recorded=False)
    assert decide(replace(evidence, announced=False)).action is Action.ROTATE


def test_without_a_complete_record_it_waits_for_every_member_and_names_them():
    decision = decide(replace(LOST_DISK, members=frozenset({"n1", "n3", "n4"})))
    assert (decision.action, decision.incarnation) == (Action.WAIT, 2)
    assert "waiting to hear from n3, n4, which may hold a later slot of n2" in decision.reason
    assert "incarnation 2" in decision.reason


def test_without_a_complete_record_it_proceeds_once_every_member_reported():
    decision = decide(replace(LOST_DISK, reported=frozenset({"n1", "n3"})))
    assert (decision.action, decision.incarnation) == (Action.PROCEED, 2)


def test_a_complete_record_proceeds_without_hearing_every_member():
    decision = decide(replace(LOST_DISK, complete_record=True, reported=frozenset()))
    assert decision.action is Action.PROCEED


def test_it_waits_until_a_peer_heard_the_current_incarnation():
    for complete in (True, False):
        evidence = replace(LOST_DISK, complete_record=complete, announced=False)
        decision = decide(replace(evidence, reported=evidence.members))
        assert decision.action is Action.WAIT
        assert decision.reason == "incarnation 2 not yet announced to a peer"


def test_a_node_alone_has_no_one_to_announce_to_or_hear_from():
    alone = replace(LOST_DISK, members=frozenset(), reported=frozenset(), announced=False)
    assert decide(alone).action is Action.PROCEED


def test_an_outside_durable_replica_must_hold_the_incarnation_first():
    redis = replace(LOST_DISK, complete_record=True, durable_outside=True)
    decision = decide(replace(redis, durable_recorded=False))
    assert decision.action is Action.WAIT
    assert decision.reason == "incarnation 2 not yet recorded in the durable replica"
    assert decide(redis).action is Action.PROCEED


@pytest.mark.parametrize("seen", [0, 1, 2, 3, 10])
@pytest.mark.parametrize("incarnation", [1, 2, 3, 10])
def test_it_never_proceeds_under_an_incarnation_seen_elsewhere(seen: int, incarnation: int):
    complete = replace(
        LOST_DISK, incarnation=incarnation, seen=seen, complete_record=True,
        reported=LOST_DISK.members,
    )  # fmt: skip
    decision = decide(complete)
    if seen >= incarnation:
        assert (decision.action, decision.incarnation) == (Action.ROTATE, seen + 1)
    else:
        assert (decision.action, decision.incarnation) == (Action.PROCEED, incarnation)

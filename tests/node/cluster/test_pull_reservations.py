"""Reservations in PULL replies (issue 11): sent only to a puller that asks for them, read
back whole, and a malformed one refuses the whole reply before anything is merged."""

from __future__ import annotations

import pytest

from crdt import PNCounter
from node.cluster import wire
from node.storage.receipt_book import Reservation

KEY = ("t", "ns", "c")
HELD = Reservation("n1", "token-1", 5_000)


def test_reservations_round_trip_beside_the_state_and_only_when_asked():
    state = PNCounter.empty().increment("n1:1", 3)
    entries = [(KEY, state, {})]
    assert wire.carried_to_wire(entries) == [[list(KEY), wire.pn_to_wire(state)]]
    raw = wire.carried_to_wire(entries, {KEY: {"order-1": HELD}})
    held: wire.Held = {}
    assert wire.carried_from_wire(raw, held) == [(KEY, state, {})]
    assert held == {KEY: {"order-1": HELD}}
    assert wire.carried_from_wire(raw) == [(KEY, state, {})]  # a PUSH ignores them


@pytest.mark.parametrize(
    "bad",
    [["n1", "token-1"], ["", "token-1", 5], ["n1", "t" * 65, 5], ["n1", "token-1", "5"], "x"],
)
def test_a_malformed_reservation_refuses_the_whole_reply(bad: object):
    good = wire.carried_to_wire([(KEY, PNCounter.empty(), {})], {KEY: {"a": HELD}})
    raw = [*good, [*good[0][:3], {"b": bad}]]
    held: wire.Held = {}
    with pytest.raises(wire.ProtocolError):
        wire.carried_from_wire(raw, held)

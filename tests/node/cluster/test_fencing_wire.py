"""RESERVE and RESOLVE (node/coordination/fencing.py) on the wire: round trips, and every
malformed body or reply refused with ProtocolError before anything is reserved."""

from __future__ import annotations

import pytest

from crdt import PNCounter
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.cluster import fence_wire, wire
from node.cluster.wire import ProtocolError

KEY = ("t", "ns", "c")
RECEIPT = Receipt(10, "n1:1", "fp", 7)


def test_reserve_request_and_answer_round_trip():
    reads = [(KEY, 5, ["a#0", "a#1"], [[], ["tok1"]])]
    body = fence_wire.reserve_to_wire("n2", "tok2", reads)
    body = wire.decode(wire.encode(wire.RESERVE, 3, body))[2]
    assert fence_wire.reserve_from_wire(body) == ("n2", "tok2", reads)
    answer = [[pn_to_wire(PNCounter.empty()), [RECEIPT.to_wire(), None, ["n1", "tok1"]]]]
    assert fence_wire.reserve_answers_from_wire(answer, [3]) == [
        ((PNCounter.empty(), {}), [RECEIPT, None, ("n1", "tok1")])
    ]


def test_a_state_in_a_reply_carries_the_receipts_not_yet_durable():
    state = PNCounter.from_slot("n1:1", 3, 0)
    stated = wire.stated_to_wire(state, {"a": RECEIPT})
    answer = wire.decode(wire.encode(wire.REPLY, 1, [[stated, [None]]]))[2]
    assert fence_wire.reserve_answers_from_wire(answer, [1]) == [((state, {"a": RECEIPT}), [None])]
    # without any, the form older nodes send and read
    assert wire.stated_to_wire(state, {}) == pn_to_wire(state)
    assert wire.stated_replies_from_wire([pn_to_wire(state), None], 2) == [(state, {}), None]
    assert wire.states_from_wire([stated], 1) == [state]
    with pytest.raises(ProtocolError):
        wire.stated_replies_from_wire([[*pn_to_wire(state), [["a", [1, 2]]]]], 1)


def test_resolve_request_and_answer_round_trip():
    body = wire.decode(
        wire.encode(wire.RESOLVE, 4, fence_wire.resolve_to_wire("tok", [(KEY, ["a"])]))
    )
    assert fence_wire.resolve_from_wire(body[2]) == ("tok", [(KEY, ["a"])])
    answer = [[None, [fence_wire.ABORTED, fence_wire.VOID, RECEIPT.to_wire()]]]
    assert fence_wire.resolve_answers_from_wire(answer, [3]) == [
        (None, [fence_wire.ABORTED, fence_wire.VOID, RECEIPT])
    ]


@pytest.mark.parametrize(
    "body",
    [
        None,
        ["n1", "tok"],
        ["n1", "", []],  # empty token
        ["n1", "t" * 65, []],
        [1, "tok", []],
        ["n1", "tok", [[list(KEY), 0, ["a"], []]]],  # superseded lists do not match the keys
        ["n1", "tok", [[list(KEY), 0, ["a"], [[1]]]]],
        ["n1", "tok", [[list(KEY), -1, ["a"], [[]]]]],
        ["n1", "tok", [[list(KEY), 0, [""], [[]]]]],
        ["n1", "tok", [[list(KEY), 0, ["a"], [["t"] * 17]]]],
    ],
)
def test_bad_reserve_requests_are_refused(body):
    with pytest.raises(ProtocolError):
        fence_wire.reserve_from_wire(body)


@pytest.mark.parametrize(
    "reply",
    [
        None,
        [[None, [None, None]]],  # two answers to one key asked
        [[None, [["n1"]]]],
        [[None, [[1, "tok"]]]],
        [[None, [[10, "n1:1", "fp"]]]],
        [[None]],
    ],
)
def test_bad_reserve_answers_are_refused(reply):
    with pytest.raises(ProtocolError):
        fence_wire.reserve_answers_from_wire(reply, [1])


@pytest.mark.parametrize(
    "reply",
    [None, [[None, ["maybe"]]], [[None, [None]]], [[None, []]], [[[1], ["aborted"]]]],
)
def test_bad_resolve_answers_are_refused(reply):
    with pytest.raises(ProtocolError):
        fence_wire.resolve_answers_from_wire(reply, [1])

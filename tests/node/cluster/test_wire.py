"""Peer frames: round trips, and every malformed frame is a ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import PNCounter
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.cluster import wire
from node.cluster.wire import ProtocolError


def test_replicate_frame_round_trips():
    state = PNCounter.empty().increment("n1:1", 5).increment("n2:3", -2)
    frame = wire.encode(wire.REPLICATE, 7, wire.entries_to_wire([(("t", "ns", "c"), state)]))
    kind, request_id, body = wire.decode(frame)
    assert (kind, request_id) == (wire.REPLICATE, 7)
    assert wire.entries_from_wire(body) == [(("t", "ns", "c"), state)]


@pytest.mark.parametrize(
    "message",
    [
        [99, 1, None],  # unknown kind
        [True, 1, None],  # bool is not a kind
        [1, -1, []],  # negative id
        [1, 1],  # too short
        {"kind": 1},  # not an array
    ],
)
def test_bad_headers_are_rejected(message):
    with pytest.raises(ProtocolError):
        wire.decode(msgpack.packb(message))


@pytest.mark.parametrize(
    "entries",
    [
        "nope",
        [[["t", "ns"], [[], []]]],  # key too short
        [[["t", "", "c"], [[], []]]],  # empty key part
        [[["t", "ns", "c"], [[["a", 0]], []]]],  # zero count
        [[["t", "ns", "c"], [[["a", -1]], []]]],  # negative count
        [[["t", "ns", "c"], [[["b", 1], ["a", 1]], []]]],  # unsorted actors
        [[["t", "ns", "c"], [[["a", 2**64]], []]]],  # past uint64
        [[["t", "ns", "c"], "state"]],
    ],
)
def test_bad_entries_are_rejected(entries):
    with pytest.raises(ProtocolError):
        wire.entries_from_wire(entries)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(data):
    try:
        _, _, body = wire.decode(data)
    except ProtocolError:
        return
    try:
        wire.entries_from_wire(body)
    except ProtocolError:
        pass


def test_slots_frame_round_trips_flat():
    body = ["n1:4", ["t", "ns", "a", 5, 0, 123, "t", "ns", "b", 0, 2, 0]]
    actor, slots = wire.slots_from_wire(body)
    assert actor == "n1:4"
    assert slots == [(("t", "ns", "a"), 5, 0, 123), (("t", "ns", "b"), 0, 2, 0)]


@pytest.mark.parametrize(
    "body",
    [
        ["n1:4"],  # no list
        ["", ["t", "ns", "a", 1, 0, 0]],  # empty actor
        ["n1:4", ["t", "ns", "a", 1, 0]],  # not a multiple of 6
        ["n1:4", ["t", "ns", "a", 0, 0, 0]],  # an empty slot
        ["n1:4", ["t", "ns", "a", -1, 0, 0]],  # negative count
        ["n1:4", ["t", "ns", "a", 2**64, 0, 0]],  # past uint64
        ["n1:4", ["t", "ns", "a", True, 0, 0]],  # bool is not a count
        ["n1:4", ["t", "", "a", 1, 0, 0]],  # empty key part
        ["n1:4", ["t", "ns", "a" * 300, 1, 0, 0]],  # key part too long
        ["n1:4", ["t", "ns", "a", 1, 0, -5]],  # bad share
    ],
)
def test_bad_slots_are_rejected(body):
    with pytest.raises(ProtocolError):
        wire.slots_from_wire(body)


def test_receipts_request_and_answer_round_trip():
    reads = [(("t", "ns", "c"), 5, ["a#0", "a#1"]), (("t", "ns", "d"), 0, [])]
    body = wire.decode(wire.encode(wire.RECEIPTS, 3, wire.receipt_reads_to_wire(reads)))[2]
    assert wire.receipt_reads_from_wire(body) == reads
    receipt = Receipt(10, "n1:1", "fp", 7)
    answer = [[None, [receipt.to_wire(), None]], [pn_to_wire(PNCounter.empty()), []]]
    decoded = wire.receipt_answers_from_wire(answer, [2, 0])
    assert decoded == [(None, [receipt, None]), (PNCounter.empty(), [])]


@pytest.mark.parametrize(
    "body",
    [
        "x",
        [["t", "ns", "c"]],
        [[["t", "ns", "c"], 5]],
        [[["t", "ns", "c"], -1, ["a"]]],
        [[["t", "ns", "c"], 5, "a"]],
        [[["t", "ns", "c"], 5, [""]]],
        [[["t", "ns", "c"], 5, [7]]],
        [[["t", "ns", "c"], 5, ["x" * 513]]],
        [[["t", "ns"], 5, ["a"]]],
    ],
)
def test_bad_receipt_reads_are_rejected(body):
    with pytest.raises(wire.ProtocolError):
        wire.receipt_reads_from_wire(body)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("x", [1]),
        ([], [1]),
        ([[None, []]], [1]),  # one receipt or None per key asked
        ([[None, [[1, "a", "fp"]]]], [1]),
        ([[None, [[1, "", "fp", 1]]]], [1]),
        ([["state", [None]]], [1]),
        ([[None]], [1]),
    ],
)
def test_bad_receipt_answers_are_rejected(answer, expected):
    with pytest.raises(wire.ProtocolError):
        wire.receipt_answers_from_wire(answer, expected)


def test_push_and_pull_entries_carry_receipts_as_an_optional_third_element():
    key, other = ("t", "ns", "c"), ("t", "#idempotency", "batch-1")
    state = PNCounter.empty().increment("n1:1", 5)
    receipt = Receipt(1_000, "n1:1", "fp", 5)
    carried = [(key, state, {"k1": receipt}), (other, PNCounter.empty(), {"batch-1": receipt})]
    body = wire.carried_to_wire([*carried, (("t", "ns", "d"), state, {})])
    assert len(body[2]) == 2  # no receipts: the two-element form older nodes send
    frame = wire.encode(wire.PUSH, 3, body)
    _, _, decoded = wire.decode(frame)
    assert wire.carried_from_wire(decoded) == [*carried, (("t", "ns", "d"), state, {})]


def test_carried_entries_read_the_old_two_element_form():
    state = PNCounter.empty().increment("n1:1", 5)
    old = wire.entries_to_wire([(("t", "ns", "c"), state)])
    assert wire.carried_from_wire(old) == [(("t", "ns", "c"), state, {})]


GOOD_KEY, GOOD_STATE = ["t", "ns", "c"], [[["a", 1]], []]


@pytest.mark.parametrize(
    "entries",
    [
        "nope",
        [[GOOD_KEY]],  # no state
        [[GOOD_KEY, GOOD_STATE, [], "extra"]],  # too long
        [[GOOD_KEY, GOOD_STATE, "receipts"]],  # receipts not a list
        [[GOOD_KEY, GOOD_STATE, [["k1"]]]],  # receipt entry without a receipt
        [[GOOD_KEY, GOOD_STATE, [["k1", [1, "n1:1", "fp"]]]]],  # receipt too short
        [[GOOD_KEY, GOOD_STATE, [["k1", [-1, "n1:1", "fp", 5]]]]],  # negative time
        [[GOOD_KEY, GOOD_STATE, [["k1", [1, "n1:1", "fp", 2**63]]]]],  # value past int64
        [[GOOD_KEY, GOOD_STATE, [["", [1, "n1:1", "fp", 5]]]]],  # empty idempotency key
        [[GOOD_KEY, GOOD_STATE, [[7, [1, "n1:1", "fp", 5]]]]],  # idempotency key not a string
        [[GOOD_KEY, GOOD_STATE, []], [["t", "ns"], GOOD_STATE]],  # a bad entry after a good
    ],
)
def test_bad_carried_entries_are_rejected_before_any_is_used(entries):
    with pytest.raises(ProtocolError):
        wire.carried_from_wire(entries)

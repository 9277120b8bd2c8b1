"""The EVENTS reply (node/realtime/feed_wire.py) carries any value and change a counter's
events can hold, as far as the realtime goes, and reads back exactly what was sent.

A stream on one node reads the events other nodes published over this reply. A value can
leave int64 (replicas that accepted increments apart merge past it), and a change can leave
msgpack's range although every value stays in int64 (+INT64_MAX, then -INT64_MAX,
-INT64_MAX, -1 within one coalescing interval nets -(2^64 - 1)). Such an event must reach
streams on every node like any other, and a reply that says anything else about a number
is refused, as the rest of the reply is."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from node.cluster import wire
from node.cluster.wire import ProtocolError
from node.realtime import feed_wire
from node.realtime.feed_log import EventLog, Read

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
# a counter's exact value: 4096 slots of uint64 on either side (crdt/codec.py MAX_ACTORS)
VALUES = st.integers(min_value=-(2**76), max_value=2**76)


def read_of(value: int, change: int) -> Read:
    log = EventLog(2)
    log.append([("t", "ns", "swing", value, change, False, 7)], 1000)
    return log.read(("t", "ns"), "", log.base, 10)


def over_the_wire(read: Read) -> Read:
    """The reply as a peer sends it and the asker reads it, through msgpack."""
    frame = wire.encode(wire.REPLY, 1, feed_wire.read_to_wire(read))
    _, _, body = wire.decode(frame)
    return feed_wire.read_from_wire(body, "t", "ns")


@given(VALUES, st.integers(min_value=-(2**77), max_value=2**77))
@example(-INT64_MAX - 1, -UINT64_MAX)  # the swing down: +MAX, -MAX, -MAX, -1
@example(INT64_MAX, UINT64_MAX)  # and back up
@example(2 * (INT64_MAX - 10), INT64_MAX - 10)  # two replicas apart, merged: uint64
@example(-2 * (INT64_MAX - 10), -(INT64_MAX - 10))  # the same downward: past msgpack
@example(UINT64_MAX + 1, 1)
@example(-INT64_MAX - 1, -1)
@example(0, 0)
def test_an_event_reads_back_exactly_at_a_peer(value: int, change: int) -> None:
    read = read_of(value, change)
    assert over_the_wire(read) == read


@pytest.mark.parametrize(
    "number",
    [
        "5",  # in range: sent as an int, so a string of it is not what a node sends
        str(-INT64_MAX - 1),
        str(UINT64_MAX),
        "0",
        "-0",
        "+" + str(2**64),
        "0" + str(2**64),
        " " + str(2**64),
        str(2**64) + "\n",
        "18_446_744_073_709_551_616",
        "١٨٤٤٦٧٤٤٠٧٣٧٠٩٥٥١٦١٦",  # Arabic-Indic digits: int() takes them, the wire does not
        "9" * 40,  # past any counter's value
        "",
        "2e19",
        1.5,
        None,
        True,
    ],
)
@pytest.mark.parametrize("field", [2, 3])  # value, change
def test_a_number_in_any_other_form_is_refused(number: object, field: int) -> None:
    event: list[object] = [1, "swing", 1, 1, 1000, False, 7]
    event[field] = number
    with pytest.raises(ProtocolError):
        feed_wire.read_from_wire([0, 1, [event]], "t", "ns")

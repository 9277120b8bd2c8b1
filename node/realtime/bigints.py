"""Integers past msgpack's range (-2^63 .. 2^64 - 1) in peer messages and the window file.

A counter's exact value can leave int64 (replicas that accepted increments apart merge past
it: README, "Values are int64"), and a net change can leave msgpack's range even when every
value stays in int64: a counter that swings from INT64_MAX to INT64_MIN within one feed
interval or one minute nets -(2^64 - 1). Such a number travels in a peer message as a
decimal string (`to_wire`, read back strictly by `from_wire`) and lies in the window file as
a msgpack ext type (`pack`, `unpack`: in-range numbers cost nothing extra either way). A
number in range stays a msgpack int, so messages and files from before read the same.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from node.cluster.wire import ProtocolError

LOW, HIGH = -(1 << 63), 1 << 64  # msgpack carries LOW <= n < HIGH
# A decimal past msgpack's range, sign included at most 40 characters (below 10^39 = 2^129):
# far past any counter's value (4096 slots of uint64 per side, 2^76) or change between two.
DECIMAL = re.compile(r"-?[1-9][0-9]{0,38}")
EXT_CODE = 1  # the window file's ext type for a decimal (ASCII) past msgpack's range


def to_wire(number: int) -> int | str:
    """`number` as msgpack carries it: itself in range, else its decimal string."""
    return number if LOW <= number < HIGH else str(number)


def from_wire(obj: object) -> int:
    """What `to_wire` sent: a msgpack int, or the decimal string of a number past its range
    (one in range is refused: each number has one form); ProtocolError otherwise."""
    if type(obj) is int:
        return obj
    if type(obj) is str and DECIMAL.fullmatch(obj):
        number = int(obj)
        if not LOW <= number < HIGH:
            return number
    raise ProtocolError("bad number: neither an int nor a decimal past msgpack's range")


def pack(obj: Any) -> bytes:
    """msgpack bytes of `obj`, integers past its range as ext type EXT_CODE."""
    return bytes(msgpack.packb(obj, default=_to_ext))


def unpack(packed: bytes) -> Any:
    """What `pack` packed (or plain msgpack); ValueError for a bad ext type."""
    return msgpack.unpackb(packed, ext_hook=_from_ext)


def _to_ext(obj: object) -> msgpack.ExtType:
    # msgpack calls this for an int it cannot pack, and for any type it does not know
    if type(obj) is not int:
        raise TypeError(f"cannot pack {type(obj).__name__}")
    return msgpack.ExtType(EXT_CODE, str(obj).encode("ascii"))


def _from_ext(code: int, data: bytes) -> int:
    text = data.decode("ascii", "replace")
    if code != EXT_CODE or not DECIMAL.fullmatch(text):
        raise ValueError(f"msgpack ext type {code} is not a decimal")
    return int(text)

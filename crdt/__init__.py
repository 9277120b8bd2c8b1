"""Pure counter CRDTs (G-Counter, PN-Counter) and their msgpack codec. No I/O happens here."""

from crdt.codec import (
    decode,
    decode_batch,
    encode,
    encode_batch,
    key_from_wire,
    key_to_wire,
    pn_from_wire,
    pn_to_wire,
)
from crdt.errors import CodecError, CounterOverflowError, CrdtError, SlotFullError
from crdt.gcounter import GCounter
from crdt.pncounter import PNCounter, saturate

__all__ = [
    "CodecError",
    "CounterOverflowError",
    "CrdtError",
    "GCounter",
    "PNCounter",
    "SlotFullError",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "key_from_wire",
    "key_to_wire",
    "pn_from_wire",
    "pn_to_wire",
    "saturate",
]

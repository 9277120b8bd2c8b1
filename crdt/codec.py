"""msgpack codec for counter states, deltas and batches of them.

A frame is one type-tag byte, one version byte and a msgpack body (packed with
use_bin_type=True). Tags are only ever appended; a new body layout gets a new VERSION.

    TAG_GCOUNTER  body: [[actor, count], ...]            pairs sorted by actor
    TAG_PNCOUNTER body: [p_pairs, n_pairs]               each as above
    TAG_BATCH     body: [[[tenant, namespace, name], [p_pairs, n_pairs]], ...]   in given order

The encoding is canonical: equal states encode to equal bytes, because actors are sorted and
msgpack always picks the shortest form of an int. Decoding accepts only canonical actor order
(sorted, no duplicates), so a frame has one meaning.

Decoding validates everything and raises only `CodecError`. msgpack itself is bounded: frame
size (MAX_FRAME_BYTES), string length, array length (MAX_ACTORS, or the body size if smaller;
a batch is streamed so its own length is never preallocated), and no bin, map or ext values.
msgpack preallocates announced arrays before our shape checks can reject deep nesting, so a
hostile frame still costs up to ~32 MiB for a moment (its 1024-level stack times MAX_ACTORS
slots), never more. Encoding trusts its input: states built by this library are valid.

A PN-Counter's value is deliberately not range-checked here. A delta (or the single slot a
coordinator replicates) can sum outside int64 while the full state it belongs to is in range:
after +(2**63-1), -(2**63-1), +(2**63-1) the value is 2**63-1 but the p slot is 2**64-2. And a
full state can merge to a value outside int64 (crdt/pncounter.py: the state stays exact, what
leaves it is saturated). Refusing such frames would stall replication of every counter
sharing the batch and close the link. Only slots are bounded (uint64), and every reachable
state's slots are.

`pn_to_wire` / `pn_from_wire` and `key_to_wire` / `key_from_wire` let the node embed states and
keys in its own msgpack messages without encoding twice; the `*_from_wire` functions validate.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from crdt.errors import CodecError
from crdt.gcounter import UINT64_MAX, GCounter, _gcounter
from crdt.pncounter import PNCounter, _pncounter

__all__ = [
    "MAX_ACTORS",
    "MAX_ACTOR_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_FRAME_BYTES",
    "MAX_KEY_PART_BYTES",
    "TAG_BATCH",
    "TAG_GCOUNTER",
    "TAG_PNCOUNTER",
    "VERSION",
    "CounterKey",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "key_from_wire",
    "key_to_wire",
    "pn_from_wire",
    "pn_to_wire",
]

TAG_GCOUNTER = 1
TAG_PNCOUNTER = 2
TAG_BATCH = 3
VERSION = 1

MAX_ACTORS = 4096  # slots per G-Counter (so per half of a PN-Counter)
MAX_ACTOR_BYTES = 256  # UTF-8 length of an actor id
MAX_KEY_PART_BYTES = 256  # UTF-8 length of a tenant, namespace or name
MAX_BATCH_ENTRIES = 100_000  # counters per batch frame
MAX_FRAME_BYTES = 64 * 1024 * 1024  # whole frame, header included

CounterKey = tuple[str, str, str]

_HEADER_LEN = 2
_GCOUNTER_HEADER = bytes((TAG_GCOUNTER, VERSION))
_PNCOUNTER_HEADER = bytes((TAG_PNCOUNTER, VERSION))
_BATCH_HEADER = bytes((TAG_BATCH, VERSION))
_SINGLE_TAGS = (TAG_GCOUNTER, TAG_PNCOUNTER)
_BATCH_TAGS = (TAG_BATCH,)
# A UTF-8 character takes at most 4 bytes, so ids this short need no byte count.
_SHORT_ID_CHARS = min(MAX_ACTOR_BYTES, MAX_KEY_PART_BYTES) // 4
_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def pn_to_wire(pn: PNCounter) -> list[list[tuple[str, int]]]:
    """The msgpack-ready form of `pn`: [p_pairs, n_pairs], each sorted by actor."""
    return [sorted(pn.p.slots.items()), sorted(pn.n.slots.items())]


def key_to_wire(key: CounterKey) -> list[str]:
    return list(key)


def encode(value: GCounter | PNCounter) -> bytes:
    """One frame holding one state (or delta)."""
    body: bytes
    if isinstance(value, PNCounter):
        body = msgpack.packb(pn_to_wire(value), use_bin_type=True)
        return _PNCOUNTER_HEADER + body
    if isinstance(value, GCounter):
        body = msgpack.packb(sorted(value.slots.items()), use_bin_type=True)
        return _GCOUNTER_HEADER + body
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_batch(entries: Iterable[tuple[CounterKey, PNCounter]]) -> bytes:
    """One frame holding many (key, state-or-delta) entries, in the order given.

    Raises CodecError when the frame would break MAX_BATCH_ENTRIES or MAX_FRAME_BYTES, so the
    sender learns to split it instead of the receiver rejecting it.
    """
    body = [
        [list(key), [sorted(pn.p.slots.items()), sorted(pn.n.slots.items())]] for key, pn in entries
    ]
    if len(body) > MAX_BATCH_ENTRIES:
        raise CodecError(f"batch of {len(body)} entries exceeds {MAX_BATCH_ENTRIES}")
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    frame = _BATCH_HEADER + packed
    if len(frame) > MAX_FRAME_BYTES:
        raise CodecError(f"batch frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    return frame


def _body(data: bytes, tags: tuple[int, ...]) -> tuple[int, memoryview]:
    """Check a frame's size and header; return its tag (one of `tags`) and its body."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"frame must be bytes, not {type(data).__name__}")
    if isinstance(data, memoryview) and (data.format != "B" or not data.c_contiguous):
        raise CodecError("frame memoryview must be contiguous unsigned bytes")
    size = len(data)
    if size < _HEADER_LEN:
        raise CodecError("frame shorter than its header")
    if size > MAX_FRAME_BYTES:
        raise CodecError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    tag = data[0]
    if tag not in tags:
        raise CodecError(f"type tag {tag}, expected one of {tags}")
    if data[1] != VERSION:
        raise CodecError(f"version {data[1]} of tag {tag} is not supported")
    return tag, memoryview(data)[_HEADER_LEN:]


def _unpack_options(body: memoryview) -> dict[str, object]:
    """msgpack options for `body`: it may hold nothing longer than a valid frame can."""
    return {
        "use_list": True,
        "raw": False,
        "strict_map_key": True,
        # msgpack preallocates the length an array header announces; each element takes at
        # least one byte, so a longer array is a lie anyway.
        "max_array_len": min(MAX_ACTORS, len(body)),
        "max_str_len": max(MAX_ACTOR_BYTES, MAX_KEY_PART_BYTES),
        "max_bin_len": 0,
        "max_map_len": 0,
        "max_ext_len": 0,
    }


def decode(data: bytes) -> GCounter | PNCounter:
    """The state held by a single-counter frame (TAG_GCOUNTER or TAG_PNCOUNTER)."""
    tag, body = _body(data, _SINGLE_TAGS)
    try:
        wire = msgpack.unpackb(body, **_unpack_options(body))
    except _UNPACK_ERRORS as exc:
        raise _malformed(exc) from exc
    if tag == TAG_GCOUNTER:
        slots = _slots_from_wire(wire)
        return _gcounter(slots) if slots else GCounter.empty()
    return pn_from_wire(wire)


def decode_batch(data: bytes) -> list[tuple[CounterKey, PNCounter]]:
    """The (key, state-or-delta) entries of a TAG_BATCH frame, in frame order."""
    _, body = _body(data, _BATCH_TAGS)
    # Streamed entry by entry so the only array allowed past MAX_ACTORS elements, the batch
    # itself, is never preallocated from its (untrusted) header.
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_FRAME_BYTES, **_unpack_options(body))
    try:
        unpacker.feed(body)
        count = unpacker.read_array_header()
        if count > MAX_BATCH_ENTRIES:
            raise CodecError(f"batch of {count} entries exceeds {MAX_BATCH_ENTRIES}")
        unpack = unpacker.unpack
        wire = [unpack() for _ in range(count)]
        trailing = len(body) - unpacker.tell()
    except CodecError:
        raise
    except _UNPACK_ERRORS as exc:
        raise _malformed(exc) from exc
    if trailing:
        raise CodecError(f"{trailing} bytes after the batch")
    entries: list[tuple[CounterKey, PNCounter]] = []
    append = entries.append
    for entry in wire:
        if type(entry) is not list or len(entry) != 2:
            raise CodecError("batch entry is not a [key, state] pair")
        append((key_from_wire(entry[0]), pn_from_wire(entry[1])))
    return entries


def _malformed(exc: Exception) -> CodecError:
    return CodecError(f"malformed msgpack body ({type(exc).__name__}: {exc})")


def key_from_wire(obj: object) -> CounterKey:
    """Validate a wire key [tenant, namespace, name] and return it as a tuple."""
    if (type(obj) is not list and type(obj) is not tuple) or len(obj) != 3:
        raise CodecError("counter key is not [tenant, namespace, name]")
    tenant, namespace, name = obj
    for part in obj:
        if type(part) is not str or not part:
            raise CodecError("counter key part is not a non-empty string")
        if len(part) > _SHORT_ID_CHARS and _utf8_len(part) > MAX_KEY_PART_BYTES:
            raise CodecError(f"counter key part longer than {MAX_KEY_PART_BYTES} bytes")
    return (tenant, namespace, name)


def pn_from_wire(obj: object) -> PNCounter:
    """Validate a wire PN-Counter [p_pairs, n_pairs] and return it."""
    if (type(obj) is not list and type(obj) is not tuple) or len(obj) != 2:
        raise CodecError("PN-Counter is not [p_pairs, n_pairs]")
    p = _slots_from_wire(obj[0])
    n = _slots_from_wire(obj[1])
    if not p and not n:
        return PNCounter.empty()
    empty = GCounter.empty()
    return _pncounter(_gcounter(p) if p else empty, _gcounter(n) if n else empty)


def _slots_from_wire(obj: object) -> dict[str, int]:
    """Validate canonical [[actor, count], ...] pairs and return them as a dict."""
    if type(obj) is not list and type(obj) is not tuple:
        raise CodecError("G-Counter is not an array of [actor, count] pairs")
    if len(obj) > MAX_ACTORS:
        raise CodecError(f"G-Counter of {len(obj)} actors exceeds {MAX_ACTORS}")
    slots: dict[str, int] = {}
    previous = ""
    for pair in obj:
        if (type(pair) is not list and type(pair) is not tuple) or len(pair) != 2:
            raise CodecError("G-Counter slot is not an [actor, count] pair")
        actor, count = pair
        # Starting from "" also rejects the empty actor; <= rejects duplicates and disorder.
        if type(actor) is not str or actor <= previous:
            raise CodecError("actors must be non-empty strings, sorted, without duplicates")
        if type(count) is not int or count < 1 or count > UINT64_MAX:
            raise CodecError(f"count of {actor!r} is not an int in 1..{UINT64_MAX}")
        if len(actor) > _SHORT_ID_CHARS and _utf8_len(actor) > MAX_ACTOR_BYTES:
            raise CodecError(f"actor id longer than {MAX_ACTOR_BYTES} bytes")
        slots[actor] = count
        previous = actor
    return slots


def _utf8_len(text: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise CodecError("id is not encodable as UTF-8") from exc

"""The peer protocol: msgpack messages over one persistent WebSocket per peer and direction.

Every message is a msgpack array `[kind, request_id, body]`, or `[kind, request_id, body,
traceparent]` when the sender traces it; on the wire it follows the frame's MAC
(node/peer_auth.py). Requests carry a positive id that the reply (kind REPLY) echoes, so many
requests share a connection without waiting for each other. Counter states inside bodies use
the crdt codec's wire form, so a state is validated exactly like a codec frame; anything
malformed raises ProtocolError before it touches state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import msgpack

from crdt import CodecError, PNCounter, codec, receipts
from crdt.codec import MAX_KEY_PART_BYTES, pn_from_wire, pn_to_wire
from crdt.receipts import MAX_IDEMPOTENCY_KEY_CHARS, Receipt
from node.base.keys import Key
from node.storage.receipt_book import Reservation

REPLY = 0
# A state in a reply (to REPLICATE, SLOTS, READ, PUSH, RESERVE, RESOLVE) is [p, n], or
# [p, n, receipts] with the counter's receipts not yet durable at the sender (stated_to_wire).
REPLICATE = 1  # body: [[key, state, share], ...]  reply: [merged state | None if same, ...]
READ = 2  # body: [[key, share], ...]               reply: [state | None if same, ...]
GOSSIP = 3  # body: map (see gossip.py)             reply: map
PUSH = 4  # body: [[key, state, receipts?], ...]   reply: [state | None, ...] | None
PULL = 5  # body: [shard, ...]                    reply: [[key, state, receipts?], ...]
FORWARD = 6  # body: map (see coordinator.py)     reply: map
SLOTS = 7  # body: [actor, [tenant, ns, name, p, n, share, tenant, ...]]  reply: as REPLICATE
RECEIPT = 8  # body: [key, idempotency key]       reply: [state, receipt | None]
# body: [[key, share, [idempotency key, ...]], ...]
# reply: [[state | None if same share, [receipt | None, ...]], ...]
RECEIPTS = 9
# Reserve or read (node/coordination/fencing.py; forms in fence_wire.py):
# body: [node, token, [[key, share, [idempotency key, ...], [[superseded token, ...], ...]], ...]]
# reply: [[state | None if same share, [receipt | None (granted) | [node, token], ...]], ...]
RESERVE = 10
# Receipt or abort, asked of the node holding a reservation:
# body: [token, [[key, [idempotency key, ...]], ...]]
# reply: [[state | None if no receipt, [receipt | "aborted" | "void", ...]], ...]
RESOLVE = 11
# A real-time query about some shards (node/realtime/query.py has its forms):
# body: [kind, tenant, namespace, prefix, name, span_min, by, k, at_ms, [shard, ...], strict]
# reply: [[shard done, ...], [[shard refused, since_ms | -1], ...], counters, total, change,
#         [[name, value, change | None], ...], since_ms]
REALTIME = 13
# The change feed's events after a position in the receiver's log (node/realtime/feed_wire.py):
# body: [tenant, namespace, prefix, after seq, limit]  reply: [floor, upto, [event, ...]]
EVENTS = 14
KINDS = frozenset(
    {
        REPLY,
        REPLICATE,
        READ,
        GOSSIP,
        PUSH,
        PULL,
        FORWARD,
        SLOTS,
        RECEIPT,
        RECEIPTS,
        RESERVE,
        RESOLVE,
        REALTIME,
        EVENTS,
    }
)
SLOT_FIELDS = 6
# What a node of this version does beyond answering the kinds above, said in its gossip
# ("features"), so a peer relies on it only once heard (a rolling upgrade mixes versions):
# "claimed-batch": a FORWARD of a batch's claim followed by its ops runs them as one group in
# which a failed claim applies none of the ops (node/coordination/coordinator.py);
# "scan-states": a FORWARD scan asked [..., True] answers each counter's state too, so a
# listing above consistency one merges replicas (node/coordination/listing.py).
FEATURES = ("claimed-batch", "scan-states")

MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_TRACE_CHARS = 128


class ProtocolError(ValueError):
    """A peer message that does not follow the protocol."""


def encode(kind: int, request_id: int, body: Any, trace: str | None = None) -> bytes:
    """`trace`: the sender's W3C traceparent, sent as a fourth element when tracing is on."""
    message = [kind, request_id, body] if trace is None else [kind, request_id, body, trace]
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> tuple[int, int, Any]:
    kind, request_id, body, _ = decode_traced(data)
    return kind, request_id, body


def decode_traced(data: bytes) -> tuple[int, int, Any, str | None]:
    """decode(), and the traceparent the message carried (None if none)."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError("frame too large")
    try:
        # unpackb bounds every length by len(data), so a small hostile frame cannot
        # make it allocate much; the frame size itself is bounded above.
        message = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises many types; the peer is wrong either way
        raise ProtocolError(f"undecodable frame: {type(error).__name__}") from None
    if not isinstance(message, list) or len(message) not in (3, 4):
        raise ProtocolError("a message is [kind, request_id, body] or [..., traceparent]")
    kind, request_id, body = message[:3]
    trace = message[3] if len(message) == 4 else None
    if trace is not None and (not isinstance(trace, str) or len(trace) > MAX_TRACE_CHARS):
        raise ProtocolError("a traceparent is a short string")
    if type(kind) is not int or kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    if type(request_id) is not int or request_id < 0:
        raise ProtocolError("bad request id")
    return kind, request_id, body, trace


def key_from_wire(obj: object) -> Key:
    try:
        return codec.key_from_wire(obj)
    except CodecError as error:
        raise ProtocolError(f"bad key: {error}") from None


def state_from_wire(obj: object) -> PNCounter:
    try:
        return pn_from_wire(obj)
    except CodecError as error:
        raise ProtocolError(f"bad counter state: {error}") from None


def entries_to_wire(entries: Iterable[tuple[Key, PNCounter]]) -> list[list[Any]]:
    return [[list(key), pn_to_wire(state)] for key, state in entries]


def entries_from_wire(obj: object) -> list[tuple[Key, PNCounter]]:
    if not isinstance(obj, list):
        raise ProtocolError("entries must be a list")
    out: list[tuple[Key, PNCounter]] = []
    for item in obj:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("an entry is [key, state]")
        out.append((key_from_wire(item[0]), state_from_wire(item[1])))
    return out


Carried = tuple[Key, PNCounter, dict[str, Receipt]]  # a counter's state and its receipts
Held = dict[Key, dict[str, Reservation]]  # per counter of a PULL reply, its reservations


def carried_to_wire(entries: Iterable[Carried], held: Held | None = None) -> list[list[Any]]:
    """PUSH and PULL entries: [key, state], or [key, state, receipts] when it has some (the
    form older nodes sent, and still read when there are none); a PULL reply to a puller
    that asked for reservations adds them, [key, state, receipts, reservations]."""
    out: list[list[Any]] = []
    for key, state, found in entries:
        entry = [list(key), pn_to_wire(state)]
        mine = held.get(key) if held else None
        if found or mine:
            entry.append(receipts.to_wire(found))
        if mine:
            entry.append({idem: [r.node, r.token, r.until_ms] for idem, r in mine.items()})
        out.append(entry)
    return out


def carried_from_wire(obj: object, held: Held | None = None) -> list[Carried]:
    """PUSH and PULL entries, all validated before the caller merges any; reservations go
    to `held` (ignored if None)."""
    if not isinstance(obj, list):
        raise ProtocolError("entries must be a list")
    out: list[Carried] = []
    for item in obj:
        if not isinstance(item, list) or len(item) not in (2, 3, 4):
            raise ProtocolError("an entry is [key, state, receipts?, reservations?]")
        found = receipts_from_wire(item[2]) if len(item) >= 3 else {}
        key = key_from_wire(item[0])
        if len(item) == 4:
            reserved = _held_from_wire(item[3])
            if held is not None:
                held[key] = reserved
        out.append((key, state_from_wire(item[1]), found))
    return out


def _held_from_wire(obj: object) -> dict[str, Reservation]:
    if not isinstance(obj, dict):
        raise ProtocolError("reservations are {idempotency key: [node, token, until ms]}")
    out: dict[str, Reservation] = {}
    for idem, holder in obj.items():
        if not isinstance(holder, list) or len(holder) != 3 or type(holder[2]) is not int:
            raise ProtocolError("a reservation is [node, token, until ms]")
        out[_idem(idem)] = Reservation(_node(holder[0]), _token(holder[1]), holder[2])
    return out


def _share(obj: object) -> int:
    if type(obj) is not int or not 0 <= obj < 1 << 64:
        raise ProtocolError("a share is an unsigned 64-bit integer")
    return obj


Update = tuple[Key, PNCounter, int, dict[str, Receipt]]


def updates_from_wire(obj: object) -> list[Update]:
    """REPLICATE entries: [key, state, sender's share of its whole state, receipts?]."""
    if not isinstance(obj, list):
        raise ProtocolError("entries must be a list")
    out: list[Update] = []
    for item in obj:
        if not isinstance(item, list) or len(item) not in (3, 4):
            raise ProtocolError("an update is [key, state, share, receipts?]")
        found = receipts_from_wire(item[3]) if len(item) == 4 else {}
        out.append((key_from_wire(item[0]), state_from_wire(item[1]), _share(item[2]), found))
    return out


def receipts_from_wire(obj: object) -> dict[str, Receipt]:
    try:
        return receipts.from_wire(obj)
    except CodecError as error:
        raise ProtocolError(f"bad receipts: {error}") from None


def receipt_request_from_wire(obj: object) -> tuple[Key, str]:
    if not isinstance(obj, list) or len(obj) != 2 or type(obj[1]) is not str or not obj[1]:
        raise ProtocolError("a receipt request is [key, idempotency key]")
    return key_from_wire(obj[0]), obj[1]


def _idem(obj: object) -> str:
    if type(obj) is not str or not 0 < len(obj) <= MAX_IDEMPOTENCY_KEY_CHARS * 2:
        raise ProtocolError("an idempotency key is a short string")
    return obj


ReceiptRead = tuple[Key, int, list[str]]  # key, sender's share, idempotency keys


def receipt_reads_from_wire(obj: object) -> list[ReceiptRead]:
    """RECEIPTS: [[key, share, [idempotency key, ...]], ...]."""
    if not isinstance(obj, list):
        raise ProtocolError("receipt reads must be a list")
    out: list[ReceiptRead] = []
    for item in obj:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[2], list):
            raise ProtocolError("a receipt read is [key, share, [idempotency key, ...]]")
        out.append((key_from_wire(item[0]), _share(item[1]), [_idem(i) for i in item[2]]))
    return out


def receipt_reads_to_wire(reads: Iterable[ReceiptRead]) -> list[list[Any]]:
    return [[list(key), share, idems] for key, share, idems in reads]


def receipt_answers_from_wire(
    obj: object, expected: list[int]
) -> list[tuple[PNCounter | None, list[Receipt | None]]]:
    """A RECEIPTS reply to reads of `expected[i]` idempotency keys of the i-th key: per key,
    the peer's state (None: equal to the sender's) and a receipt or None per idempotency key."""
    if not isinstance(obj, list) or len(obj) != len(expected):
        raise ProtocolError("a receipts reply has one entry per key")
    out: list[tuple[PNCounter | None, list[Receipt | None]]] = []
    for item, count in zip(obj, expected, strict=True):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise ProtocolError("a receipts answer is [state | None, [receipt | None, ...]]")
        if len(item[1]) != count:
            raise ProtocolError("a receipts answer has one receipt or None per key asked")
        state = None if item[0] is None else state_from_wire(item[0])
        try:
            found = [None if raw is None else Receipt.from_wire(raw) for raw in item[1]]
        except CodecError as error:
            raise ProtocolError(f"bad receipt: {error}") from None
        out.append((state, found))
    return out


MAX_TOKEN_CHARS = 64


def _token(obj: object) -> str:
    if type(obj) is not str or not 0 < len(obj) <= MAX_TOKEN_CHARS:
        raise ProtocolError("a process token is a short string")
    return obj


def _node(obj: object) -> str:
    if type(obj) is not str or not obj or len(obj.encode()) > MAX_KEY_PART_BYTES:
        raise ProtocolError("bad node id")
    return obj


def _part(obj: object) -> str:
    # A character is at most 4 UTF-8 bytes, so short strings need no encoding to check.
    if type(obj) is not str or not obj:
        raise ProtocolError("bad key part")
    if len(obj) > MAX_KEY_PART_BYTES // 4 and len(obj.encode()) > MAX_KEY_PART_BYTES:
        raise ProtocolError("key part too long")
    return obj


def slots_from_wire(obj: object) -> tuple[str, list[tuple[Key, int, int, int]]]:
    """SLOTS: one actor's new slot values for many keys, flat, so a frame of thousands of
    writes decodes into few objects: [actor, [tenant, ns, name, p, n, share, ...]]."""
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
        raise ProtocolError("slots are [actor, flat list]")
    actor, flat = obj
    if type(actor) is not str or not actor or len(actor.encode()) > MAX_KEY_PART_BYTES:
        raise ProtocolError("bad actor")
    if len(flat) % SLOT_FIELDS:
        raise ProtocolError("slot list length is not a multiple of 6")
    out: list[tuple[Key, int, int, int]] = []
    for i in range(0, len(flat), SLOT_FIELDS):
        tenant, namespace, name, p, n, share = flat[i : i + SLOT_FIELDS]
        for count in (p, n):
            if type(count) is not int or not 0 <= count < 1 << 64:
                raise ProtocolError("a slot count is a uint64")
        if not p and not n:
            raise ProtocolError("an empty slot")
        out.append(((_part(tenant), _part(namespace), _part(name)), p, n, _share(share)))
    return actor, out


def reads_from_wire(obj: object) -> list[tuple[Key, int]]:
    """READ entries: [key, sender's share]."""
    if not isinstance(obj, list):
        raise ProtocolError("reads must be a list")
    out: list[tuple[Key, int]] = []
    for item in obj:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("a read is [key, share]")
        out.append((key_from_wire(item[0]), _share(item[1])))
    return out


Stated = tuple[PNCounter, Mapping[str, Receipt]]  # a state, and the receipts sent with it
NO_RECEIPTS: Mapping[str, Receipt] = MappingProxyType({})


def stated_to_wire(state: PNCounter, unflushed: Mapping[str, Receipt]) -> list[Any]:
    """A state in a reply, with the counter's receipts not yet durable at the sender: a
    slot never leaves a node without the receipts of the keyed ops it counts that could
    die with it (node/coordination/idempotency.py). [p, n] when there are none, the form
    older nodes send and read."""
    out: list[Any] = pn_to_wire(state)
    if unflushed:
        out.append(receipts.to_wire(unflushed))
    return out


def stated_from_wire(obj: object) -> Stated:
    """[p, n] or [p, n, receipts]: the receiver adds the receipts before it merges."""
    if isinstance(obj, list) and len(obj) == 3:
        return state_from_wire(obj[:2]), receipts_from_wire(obj[2])
    return state_from_wire(obj), NO_RECEIPTS


def stated_replies_from_wire(obj: object, expected: int) -> list[Stated | None]:
    """A reply of one state (or None: the same as ours) per key sent."""
    if not isinstance(obj, list) or len(obj) != expected:
        raise ProtocolError("reply has the wrong number of states")
    return [None if item is None else stated_from_wire(item) for item in obj]


def states_from_wire(obj: object, expected: int) -> list[PNCounter | None]:
    """stated_replies_from_wire, the states only."""
    return [None if s is None else s[0] for s in stated_replies_from_wire(obj, expected)]


def shards_from_wire(obj: object, shard_count: int) -> list[int]:
    if not isinstance(obj, list):
        raise ProtocolError("shards must be a list")
    for shard in obj:
        if type(shard) is not int or not 0 <= shard < shard_count:
            raise ProtocolError("bad shard number")
    return obj

"""The wire forms of fencing (node/coordination/fencing.py): RESERVE and RESOLVE requests
and replies, validated like every peer message (wire.py) before they touch any state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdt import CodecError
from crdt.receipts import Receipt
from node.base.keys import Key
from node.cluster.wire import (
    ProtocolError,
    Stated,
    _idem,
    _node,
    _share,
    _token,
    key_from_wire,
    stated_from_wire,
)

Holder = tuple[str, str]  # (node, process token) of an attempt holding a reservation
ReserveRead = tuple[Key, int, list[str], list[list[str]]]  # key, share, idems, superseded
ABORTED, VOID = "aborted", "void"  # the answers to RESOLVE besides a receipt


def reserve_to_wire(node: str, token: str, reads: Iterable[ReserveRead]) -> list[Any]:
    return [node, token, [[list(key), share, idems, old] for key, share, idems, old in reads]]


def reserve_from_wire(obj: object) -> tuple[str, str, list[ReserveRead]]:
    """RESERVE: who asks, and per counter the idempotency keys to reserve (or read)."""
    if not isinstance(obj, list) or len(obj) != 3 or not isinstance(obj[2], list):
        raise ProtocolError("a reserve request is [node, token, [entry, ...]]")
    node, token = _node(obj[0]), _token(obj[1])
    out: list[ReserveRead] = []
    for item in obj[2]:
        if (
            not isinstance(item, list)
            or len(item) != 4
            or not isinstance(item[2], list)
            or not isinstance(item[3], list)
            or len(item[2]) != len(item[3])
        ):
            raise ProtocolError("a reserve entry is [key, share, [idem, ...], [[token, ...], ...]]")
        superseded: list[list[str]] = []
        for tokens in item[3]:
            if not isinstance(tokens, list) or len(tokens) > 16:
                raise ProtocolError("superseded tokens are a short list")
            superseded.append([_token(t) for t in tokens])
        idems = [_idem(i) for i in item[2]]
        out.append((key_from_wire(item[0]), _share(item[1]), idems, superseded))
    return node, token, out


def reserve_answers_from_wire(
    obj: object, expected: list[int]
) -> list[tuple[Stated | None, list[Receipt | Holder | None]]]:
    """A RESERVE reply: per counter, the peer's state (None: same share) and per idempotency
    key its receipt, None (granted), or the (node, token) of the attempt that holds it."""
    if not isinstance(obj, list) or len(obj) != len(expected):
        raise ProtocolError("a reserve reply has one entry per key")
    out: list[tuple[Stated | None, list[Receipt | Holder | None]]] = []
    for item, count in zip(obj, expected, strict=True):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise ProtocolError("a reserve answer is [state | None, [answer, ...]]")
        if len(item[1]) != count:
            raise ProtocolError("a reserve answer has one answer per key asked")
        state = None if item[0] is None else stated_from_wire(item[0])
        found: list[Receipt | Holder | None] = []
        for raw in item[1]:
            if raw is None:
                found.append(None)
            elif isinstance(raw, list) and len(raw) == 2:
                found.append((_node(raw[0]), _token(raw[1])))
            else:
                try:
                    found.append(Receipt.from_wire(raw))
                except CodecError as error:
                    raise ProtocolError(f"bad receipt: {error}") from None
        out.append((state, found))
    return out


def resolve_to_wire(token: str, reads: Iterable[tuple[Key, list[str]]]) -> list[Any]:
    return [token, [[list(key), idems] for key, idems in reads]]


def resolve_from_wire(obj: object) -> tuple[str, list[tuple[Key, list[str]]]]:
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
        raise ProtocolError("a resolve request is [token, [[key, [idem, ...]], ...]]")
    token = _token(obj[0])
    out: list[tuple[Key, list[str]]] = []
    for item in obj[1]:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise ProtocolError("a resolve entry is [key, [idem, ...]]")
        out.append((key_from_wire(item[0]), [_idem(i) for i in item[1]]))
    return token, out


def resolve_answers_from_wire(
    obj: object, expected: list[int]
) -> list[tuple[Stated | None, list[Receipt | str]]]:
    """A RESOLVE reply: per counter, the holder's state when it holds a receipt, and per
    idempotency key its receipt, ABORTED or VOID."""
    if not isinstance(obj, list) or len(obj) != len(expected):
        raise ProtocolError("a resolve reply has one entry per key")
    out: list[tuple[Stated | None, list[Receipt | str]]] = []
    for item, count in zip(obj, expected, strict=True):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise ProtocolError("a resolve answer is [state | None, [answer, ...]]")
        if len(item[1]) != count:
            raise ProtocolError("a resolve answer has one answer per key asked")
        state = None if item[0] is None else stated_from_wire(item[0])
        found: list[Receipt | str] = []
        for raw in item[1]:
            if raw in (ABORTED, VOID):
                found.append(raw)
                continue
            try:
                found.append(Receipt.from_wire(raw))
            except CodecError as error:
                raise ProtocolError(f"bad receipt: {error}") from None
        out.append((state, found))
    return out

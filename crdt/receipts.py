"""Idempotency receipts: what the first attempt of a request answered, kept with its counter.

State: a map idempotency key -> Receipt(fingerprint of the request, the value first
answered, when it was applied in ms, the actor that applied it). The value is what the
client was answered: the counter's value saturated to int64 (crdt/pncounter.py), so it is
always an int64 however far concurrent increments pushed the merged state.

merge(a, b): the union of both maps; where both hold a key, the receipt first in the order
(at_ms, actor, fingerprint, value) wins. A per-key minimum in a total order, so merge is
    associative, commutative and idempotent,
and replicas that saw two racing first attempts agree on one winner.

prune(now_ms, window_ms): drops receipts older than the window; time is an argument.

merge_into(target, incoming) is merge() written into `target` in place, in O(len(incoming)):
what a store or a queue that already holds many receipts uses, so adding a few never copies
all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crdt.errors import CodecError

MAX_IDEMPOTENCY_KEY_CHARS = 256
MAX_FINGERPRINT_CHARS = 128


@dataclass(frozen=True, slots=True, order=True)
class Receipt:
    at_ms: int
    actor: str
    fingerprint: str
    value: int

    def to_wire(self) -> list[Any]:
        return [self.at_ms, self.actor, self.fingerprint, self.value]

    @classmethod
    def from_wire(cls, obj: object) -> Receipt:
        if not isinstance(obj, list | tuple) or len(obj) != 4:
            raise CodecError("a receipt is [at_ms, actor, fingerprint, value]")
        at_ms, actor, fingerprint, value = obj
        if type(at_ms) is not int or not 0 <= at_ms < 1 << 63:
            raise CodecError("receipt time is not a non-negative int64")
        if type(actor) is not str or not 0 < len(actor) <= 256:
            raise CodecError("receipt actor is not a short string")
        if type(fingerprint) is not str or not 0 < len(fingerprint) <= MAX_FINGERPRINT_CHARS:
            raise CodecError("receipt fingerprint is not a short string")
        if type(value) is not int or not -(1 << 63) <= value < 1 << 63:
            raise CodecError("receipt value is not an int64")
        return cls(at_ms, actor, fingerprint, value)


Receipts = Mapping[str, Receipt]


def merge(a: Receipts, b: Receipts) -> dict[str, Receipt]:
    merged = dict(a)
    for key, receipt in b.items():
        mine = merged.get(key)
        if mine is None or receipt < mine:
            merged[key] = receipt
    return merged


def merge_into(target: dict[str, Receipt], incoming: Receipts) -> bool:
    """target = merge(target, incoming), in place; returns whether target changed."""
    changed = False
    for key, receipt in incoming.items():
        mine = target.get(key)
        if mine is None or receipt < mine:
            target[key] = receipt
            changed = True
    return changed


def prune(receipts: Receipts, now_ms: int, window_ms: int) -> dict[str, Receipt]:
    return {k: r for k, r in receipts.items() if r.at_ms + window_ms >= now_ms}


def to_wire(receipts: Receipts) -> list[list[Any]]:
    """[[key, [at_ms, actor, fingerprint, value]], ...] in key order. A keyed write's entry
    usually holds one receipt (one per counter per batch): it takes no sort."""
    if len(receipts) == 1:
        for key, r in receipts.items():
            return [[key, [r.at_ms, r.actor, r.fingerprint, r.value]]]
    return [
        [key, [r.at_ms, r.actor, r.fingerprint, r.value]] for key, r in sorted(receipts.items())
    ]


def from_wire(obj: object) -> dict[str, Receipt]:
    """The receipts of a wire list; how many is bounded by the frame that carried them.
    Receipt.from_wire's checks, inlined: every replica decodes one receipt per keyed op."""
    if type(obj) is not list and type(obj) is not tuple:
        raise CodecError("receipts are a list of [key, receipt]")
    out: dict[str, Receipt] = {}
    for item in obj:
        if (type(item) is not list and type(item) is not tuple) or len(item) != 2:
            raise CodecError("a receipt entry is [key, receipt]")
        key, fields = item
        if type(key) is not str or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS * 2:
            raise CodecError("an idempotency key is a short string")
        if (type(fields) is list or type(fields) is tuple) and len(fields) == 4:
            at_ms, actor, fingerprint, value = fields
            if (
                type(at_ms) is int
                and 0 <= at_ms < 1 << 63
                and type(actor) is str
                and 0 < len(actor) <= 256
                and type(fingerprint) is str
                and 0 < len(fingerprint) <= MAX_FINGERPRINT_CHARS
                and type(value) is int
                and -(1 << 63) <= value < 1 << 63
            ):
                receipt = Receipt(at_ms, actor, fingerprint, value)
            else:
                receipt = Receipt.from_wire(fields)  # raises, saying what is wrong
        else:
            receipt = Receipt.from_wire(fields)  # raises
        mine = out.get(key)
        if mine is None or receipt < mine:
            out[key] = receipt
    return out

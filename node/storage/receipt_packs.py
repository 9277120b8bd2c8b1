"""Receipts packed for the durable replica: one blob per request instead of one row per op.

A keyed batch of 100 ops leaves 100 receipts on each replica that differ only in their
counter, idempotency key ("K#0", "K#1", ...) and value: they share the time, the actor that
applied them and the request's fingerprint. Stored one row each, every op cost a row with two
index entries in SQLite on every replica. A pack is the receipts of one (time, actor,
fingerprint), which is one request on one coordinator, as one msgpack array:

    [PACK_VERSION, at_ms, actor, fingerprint, [tenant, namespace, name, shard, idem, value, ...]]

with one expiry, at_ms + window: all its receipts expire together, so expiry stays bounded by
the window exactly as per row. The in-memory ReceiptBook stays the index for lookups; a pack
is only ever read whole, at a load, which keeps the receipts of the shards it loads.

Receipts that are not one request's (a hand-off's or anti-entropy's, say) pack by the same
rule, one pack per distinct (time, actor, fingerprint). A pack holds at most PACK_MAX_ENTRIES
receipts, so no blob grows with a node's backlog. The same receipt may be stored in two packs
(written again after a failed flush, or learnt twice): a load merges them like any receipts
(the first in receipt order wins, crdt/receipts.py), so duplicates are harmless.

Pure functions: no I/O, time is an argument.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import msgpack

from crdt import CodecError, codec
from crdt.receipts import MAX_IDEMPOTENCY_KEY_CHARS, Receipt
from node.base.keys import Key

PACK_VERSION = 1
ENTRY_FIELDS = 6  # tenant, namespace, name, shard, idempotency key, value
# receipts per pack: a whole batch (1,000 ops at most) in one, a blob of about 50 KB at most
PACK_MAX_ENTRIES = 1_024
# One receipt entry: counter, shard, idempotency key, receipt (node/storage/durable.py)
PackEntry = tuple[Key, int, str, Receipt]


class PackError(ValueError):
    """A stored pack that is not one this module wrote."""


def pack(entries: Iterable[PackEntry], window_ms: int, now_ms: int) -> list[tuple[int, int, bytes]]:
    """(expires_ms, receipts, blob) per pack of the receipts still within the window at
    now_ms; the receipts of one (at_ms, actor, fingerprint) share a pack (or a few, past
    the cap)."""
    groups: dict[tuple[int, str, str], list[Any]] = {}
    oldest = now_ms - window_ms
    for (tenant, namespace, name), shard, idem, receipt in entries:
        if receipt.at_ms < oldest:
            continue
        head = (receipt.at_ms, receipt.actor, receipt.fingerprint)
        flat = groups.get(head)
        if flat is None:
            flat = groups[head] = []
        flat += (tenant, namespace, name, shard, idem, receipt.value)
    packed = []
    step = PACK_MAX_ENTRIES * ENTRY_FIELDS
    for (at_ms, actor, fingerprint), flat in groups.items():
        for start in range(0, len(flat), step):
            part = flat[start : start + step]
            body = [PACK_VERSION, at_ms, actor, fingerprint, part]
            packed.append((at_ms + window_ms, len(part) // ENTRY_FIELDS, msgpack.packb(body)))
    return packed


def unpack(
    blob: bytes, shards: Collection[int] | None = None, keys: dict[Key, Key] | None = None
) -> list[PackEntry]:
    """The receipts of a pack (of these shards only, unless None), each checked like a
    receipt from the wire; `keys` shares one key object per counter across packs."""
    try:
        body = msgpack.unpackb(blob, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise PackError(f"a receipt pack is not msgpack: {error}") from None
    if not isinstance(body, list) or len(body) != 5 or body[0] != PACK_VERSION:
        raise PackError("a receipt pack is [version, at_ms, actor, fingerprint, entries]")
    _, at_ms, actor, fingerprint, flat = body
    if not isinstance(flat, list) or len(flat) % ENTRY_FIELDS:
        raise PackError("a receipt pack's entries are a flat list of 6 fields each")
    try:
        head = Receipt.from_wire([at_ms, actor, fingerprint, 0])  # checks the shared fields
    except CodecError as error:
        raise PackError(f"a receipt pack's head: {error}") from None
    known = {} if keys is None else keys
    out: list[PackEntry] = []
    for i in range(0, len(flat), ENTRY_FIELDS):
        tenant, namespace, name, shard, idem, value = flat[i : i + ENTRY_FIELDS]
        if type(shard) is not int or shard < 0:
            raise PackError("a receipt's shard is not a non-negative int")
        if shards is not None and shard not in shards:
            continue
        if type(idem) is not str or not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY_CHARS * 2:
            raise PackError("a receipt's idempotency key is not a short string")
        if type(value) is not int or not -(1 << 63) <= value < 1 << 63:
            raise PackError("a receipt's value is not an int64")
        raw = (tenant, namespace, name)
        strings = type(tenant) is str and type(namespace) is str and type(name) is str
        key = known.get(raw) if strings else None
        if key is None:
            try:
                key = codec.key_from_wire(raw)
            except CodecError as error:
                raise PackError(f"a receipt's counter: {error}") from None
            known[key] = key
        out.append((key, shard, idem, Receipt(head.at_ms, head.actor, head.fingerprint, value)))
    return out

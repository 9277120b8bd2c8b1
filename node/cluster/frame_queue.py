"""What waits for the next frame to one peer: the group-commit queue of a peer link.

`replicate()`, `replicate_slot()` and `read()` only queue a key and return its future; the
link's sender takes `next_frame()` whenever it may write one, so every update bound for the
peer within a loop turn (or while earlier frames are in flight) shares one frame. Updates to
the same key in one frame are merged first, so a hot key costs one entry per frame, not one
per request.

`replicate_slots()` (and `replicate_many()`, for states with receipts) queues the slots of
many keys for one future, which resolves to the
peer's answers for all of them at once: a batch of plain increments costs one future, one
callback and one quorum group per peer, not one per op. All of a batch's keys go out in the
same frame (a frame takes every queued slot of its actor).

Each entry carries this node's digest share of the key's whole state (store.share). A peer
whose state ends up equal answers None instead of its state, so in the steady state a reply
is a list of None and nothing needs decoding or merging; futures resolve to None then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from crdt import PNCounter
from crdt import receipts as crdt_receipts
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.base.keys import Key
from node.cluster import wire

StateFuture = asyncio.Future[wire.Stated | None]  # a peer's state and its receipts
# the futures of a slot queued by batches only (replicate_slots): one shared empty list,
# replaced (never appended to) when a single write of the same key joins it
_NO_FUTURES: list[StateFuture] = []
BatchFuture = asyncio.Future[list[wire.Stated | None]]  # per key of a batch, in order
ShareOf = Callable[[Key], int]
FRAME_KINDS = (wire.SLOTS, wire.REPLICATE, wire.READ)  # group-committed, in turn


def fail(futures: Iterable[asyncio.Future[Any]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


class Waiting:
    """Whom a frame's reply settles: per entry, the futures of that key; and the batch
    futures, each with the positions of its keys among the entries."""

    __slots__ = ("batches", "entries")

    def __init__(
        self,
        entries: list[list[StateFuture]],
        batches: list[tuple[BatchFuture, list[int]]] | None = None,
    ) -> None:
        self.entries = entries
        self.batches = batches or []

    def futures(self) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = [f for fs in self.entries for f in fs]
        return futures + [future for future, _ in self.batches]

    def resolve(self, states: list[wire.Stated | None]) -> None:
        """Hand the i-th entry's state to its futures; each batch its keys' states."""
        for futures, state in zip(self.entries, states, strict=True):
            for future in futures:
                if not future.done():
                    future.set_result(state)
        for batch, positions in self.batches:
            if not batch.done():
                batch.set_result([states[i] for i in positions])


class FrameQueue:
    def __init__(self, share_of: ShareOf) -> None:
        self._share_of = share_of
        # per key: the state to send, the futures waiting for it, its receipts
        self._writes: dict[Key, tuple[PNCounter, list[StateFuture], dict[str, Receipt]]] = {}
        self._reads: dict[Key, list[StateFuture]] = {}
        # per actor (the node's current one, or its previous one across a rotation), per
        # key: the slot values to send and the futures waiting for them
        self._slots: dict[str, dict[Key, tuple[int, int, list[StateFuture]]]] = {}
        # per actor: the batches of its queued slots (replicate_slots), with their keys
        self._slot_batches: dict[str, list[tuple[BatchFuture, list[Key]]]] = {}
        self._write_batches: list[tuple[BatchFuture, list[Key]]] = []  # replicate_many's
        # per frame kind: the traceparent the next frame carries (one of its writes' contexts)
        self._traces: dict[int, str] = {}
        self._turn = 0  # index into FRAME_KINDS: whose turn the next frame is

    def __bool__(self) -> bool:
        return bool(self._slots or self._writes or self._reads)

    @property
    def backlog(self) -> int:
        return len(self._writes) + len(self._reads) + sum(map(len, self._slots.values()))

    def replicate(
        self,
        key: Key,
        state: PNCounter,
        trace: str | None = None,
        receipts: Mapping[str, Receipt] | None = None,
    ) -> StateFuture:
        """Queue state (a partial or a full state) to merge, with the key's idempotency
        receipts if any. `trace`: the traceparent of the write's span."""
        if trace is not None:
            self._traces.setdefault(wire.REPLICATE, trace)
        future: StateFuture = asyncio.get_running_loop().create_future()
        queued = self._writes.get(key)
        if queued is None:
            self._writes[key] = (state, [future], dict(receipts or {}))
        else:
            queued[1].append(future)
            if receipts:  # in place: a hot key's queued receipts are never copied
                crdt_receipts.merge_into(queued[2], receipts)
            self._writes[key] = (queued[0].merge(state), queued[1], queued[2])
        return future

    def replicate_many(
        self,
        items: list[tuple[Key, PNCounter, Mapping[str, Receipt] | None]],
        trace: str | None = None,
    ) -> BatchFuture:
        """replicate() of many distinct keys (key, state, receipts) under one future."""
        if trace is not None:
            self._traces.setdefault(wire.REPLICATE, trace)
        future: BatchFuture = asyncio.get_running_loop().create_future()
        writes = self._writes
        for key, state, receipts in items:
            queued = writes.get(key)
            if queued is None:
                writes[key] = (state, [], dict(receipts or {}))
            else:
                if receipts:
                    crdt_receipts.merge_into(queued[2], receipts)
                writes[key] = (queued[0].merge(state), queued[1], queued[2])
        self._write_batches.append((future, [key for key, _, _ in items]))
        return future

    def replicate_slot(
        self, key: Key, actor: str, p: int, n: int, trace: str | None = None
    ) -> StateFuture:
        """Queue one actor's slot (p, n) of key, for the compact SLOTS frame."""
        if trace is not None:
            self._traces.setdefault(wire.SLOTS, trace)
        future: StateFuture = asyncio.get_running_loop().create_future()
        slots = self._slots.setdefault(actor, {})
        queued = slots.get(key)
        if queued is None:
            slots[key] = (p, n, [future])
        else:
            futures = queued[2]
            if futures is _NO_FUTURES:  # queued by a batch only: its futures list is shared
                futures = [future]
            else:
                futures.append(future)
            slots[key] = (max(p, queued[0]), max(n, queued[1]), futures)
        return future

    def replicate_slots(
        self,
        actor: str,
        items: list[tuple[Key, int, int]],
        trace: str | None = None,
        keys: list[Key] | None = None,
    ) -> BatchFuture:
        """Queue one actor's slots (key, p, n) of many distinct keys under one future.
        `keys`: the items' keys in their order, if the caller has them already (shared,
        never changed)."""
        if trace is not None:
            self._traces.setdefault(wire.SLOTS, trace)
        future: BatchFuture = asyncio.get_running_loop().create_future()
        slots = self._slots.setdefault(actor, {})
        get = slots.get
        for key, p, n in items:
            queued = get(key)
            if queued is None:  # most keys of a batch: no list made per key
                slots[key] = (p, n, _NO_FUTURES)
            else:
                p_was, n_was, futures = queued
                slots[key] = (p if p > p_was else p_was, n if n > n_was else n_was, futures)
        if keys is None:
            keys = [key for key, _, _ in items]
        self._slot_batches.setdefault(actor, []).append((future, keys))
        return future

    def read(self, key: Key, trace: str | None = None) -> StateFuture:
        if trace is not None:
            self._traces.setdefault(wire.READ, trace)
        future: StateFuture = asyncio.get_running_loop().create_future()
        self._reads.setdefault(key, []).append(future)
        return future

    def next_frame(self) -> tuple[int, Any, Waiting, str | None]:
        """The next frame to send: its kind, body, whom its reply settles, and the
        traceparent it carries.

        Kinds take turns (own slots, states, reads), so a steady stream of one kind cannot
        hold another back: under load a keyed write's receipt (a REPLICATE entry) would
        otherwise wait for as long as plain increments (SLOTS) keep coming."""
        share_of = self._share_of
        for _ in range(len(FRAME_KINDS)):
            kind = FRAME_KINDS[self._turn]
            self._turn = (self._turn + 1) % len(FRAME_KINDS)
            if kind == wire.SLOTS and self._slots:
                actor = next(iter(self._slots))
                slots = self._slots.pop(actor)
                flat: list[Any] = []
                for key, (p, n, _) in slots.items():
                    flat += (*key, p, n, share_of(key))
                waiting = Waiting([futures for _, _, futures in slots.values()])
                batches = self._slot_batches.pop(actor, None)
                if batches:
                    index = {key: i for i, key in enumerate(slots)}
                    waiting.batches = [(f, [index[k] for k in keys]) for f, keys in batches]
                return kind, [actor, flat], waiting, self._traces.pop(kind, None)
            if kind == wire.REPLICATE and self._writes:
                writes, self._writes = self._writes, {}
                body = [
                    [list(k), pn_to_wire(s), share_of(k), crdt_receipts.to_wire(r)]
                    if r
                    else [list(k), pn_to_wire(s), share_of(k)]
                    for k, (s, _, r) in writes.items()
                ]
                waiting = Waiting([futures for _, futures, _ in writes.values()])
                if self._write_batches:
                    batches, self._write_batches = self._write_batches, []
                    index = {key: i for i, key in enumerate(writes)}
                    waiting.batches = [(f, [index[k] for k in keys]) for f, keys in batches]
                return kind, body, waiting, self._traces.pop(kind, None)
            if kind == wire.READ and self._reads:
                reads, self._reads = self._reads, {}
                body = [[list(key), share_of(key)] for key in reads]
                return kind, body, Waiting(list(reads.values())), self._traces.pop(kind, None)
        raise AssertionError("next_frame called with nothing queued")

    def fail_all(self, error: Exception) -> None:
        """Fail every update and read still waiting for a frame."""
        futures: list[asyncio.Future[Any]] = [f for _, fs, _ in self._writes.values() for f in fs]
        futures += [f for fs in self._reads.values() for f in fs]
        futures += [f for slots in self._slots.values() for *_, fs in slots.values() for f in fs]
        futures += [f for batches in self._slot_batches.values() for f, _ in batches]
        futures += [f for f, _ in self._write_batches]
        self._writes, self._reads, self._slots, self._slot_batches = {}, {}, {}, {}
        self._write_batches = []
        fail(futures, error)

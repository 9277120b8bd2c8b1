"""What waits for the next frame to one peer: the group-commit queue of a peer link.

`replicate()`, `replicate_slot()` and `read()` only queue a key and return its future; the
link's sender takes `next_frame()` whenever it may write one, so every update bound for the
peer within a loop turn (or while earlier frames are in flight) shares one frame. Updates to
the same key in one frame are merged first, so a hot key costs one entry per frame, not one
per request.

Each entry carries this node's digest share of the key's whole state (store.share). A peer
whose state ends up equal answers None instead of its state, so in the steady state a reply
is a list of None and nothing needs decoding or merging; futures resolve to None then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from crdt import PNCounter
from crdt import receipts as crdt_receipts
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.base.keys import Key
from node.cluster import wire

StateFuture = asyncio.Future[wire.Stated | None]  # a peer's state and its receipts
ShareOf = Callable[[Key], int]
FRAME_KINDS = (wire.SLOTS, wire.REPLICATE, wire.READ)  # group-committed, in turn


def fail(futures: list[asyncio.Future[Any]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


class FrameQueue:
    def __init__(self, share_of: ShareOf) -> None:
        self._share_of = share_of
        # per key: the state to send, the futures waiting for it, its receipts
        self._writes: dict[Key, tuple[PNCounter, list[StateFuture], dict[str, Receipt]]] = {}
        self._reads: dict[Key, list[StateFuture]] = {}
        # per actor (the node's current one, or its previous one across a rotation), per
        # key: the slot values to send and the futures waiting for them
        self._slots: dict[str, dict[Key, tuple[int, int, list[StateFuture]]]] = {}
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
            queued[2].append(future)
            slots[key] = (max(p, queued[0]), max(n, queued[1]), queued[2])
        return future

    def read(self, key: Key, trace: str | None = None) -> StateFuture:
        if trace is not None:
            self._traces.setdefault(wire.READ, trace)
        future: StateFuture = asyncio.get_running_loop().create_future()
        self._reads.setdefault(key, []).append(future)
        return future

    def next_frame(self) -> tuple[int, Any, list[list[StateFuture]], str | None]:
        """The next frame to send: its kind, body, the futures of each of its keys, and the
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
                waiting = [futures for _, _, futures in slots.values()]
                return kind, [actor, flat], waiting, self._traces.pop(kind, None)
            if kind == wire.REPLICATE and self._writes:
                writes, self._writes = self._writes, {}
                body = [
                    [list(k), pn_to_wire(s), share_of(k), crdt_receipts.to_wire(r)]
                    if r
                    else [list(k), pn_to_wire(s), share_of(k)]
                    for k, (s, _, r) in writes.items()
                ]
                waiting = [futures for _, futures, _ in writes.values()]
                return kind, body, waiting, self._traces.pop(kind, None)
            if kind == wire.READ and self._reads:
                reads, self._reads = self._reads, {}
                body = [[list(key), share_of(key)] for key in reads]
                return kind, body, list(reads.values()), self._traces.pop(kind, None)
        raise AssertionError("next_frame called with nothing queued")

    def fail_all(self, error: Exception) -> None:
        """Fail every update and read still waiting for a frame."""
        futures = [f for _, fs, _ in self._writes.values() for f in fs]
        futures += [f for fs in self._reads.values() for f in fs]
        futures += [f for slots in self._slots.values() for *_, fs in slots.values() for f in fs]
        self._writes, self._reads, self._slots = {}, {}, {}
        fail(futures, error)

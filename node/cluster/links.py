"""Outgoing peer links: one persistent WebSocket per peer, group-committed frames.

`replicate()` and `read()` only queue a key; a sender task drains the queue into one
REPLICATE or READ frame per turn, so every update bound for a peer within a loop turn (or
while earlier frames are in flight) shares one frame. Updates to the same key in one frame
are merged first, so a hot key costs one entry per frame, not one per request.

Each entry carries this node's digest share of the key's whole state (store.share). A peer
whose state ends up equal answers None instead of its state, so in the steady state a reply
is a list of None and nothing needs decoding or merging; futures resolve to None then.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from crdt import PNCounter
from crdt import receipts as crdt_receipts
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.base.config import Config
from node.base.errors import PeerError
from node.base.keys import Key
from node.cluster import peer_auth, wire

log = logging.getLogger("counters.peers")
PEER_PATH = "/peer/ws"
ReplyHandler = Callable[[bool, Any], None]
StateFuture = asyncio.Future[PNCounter | None]
ShareOf = Callable[[Key], int]
FRAME_KINDS = (wire.SLOTS, wire.REPLICATE, wire.READ)  # group-committed, in turn
REPLICATION_KINDS = frozenset(FRAME_KINDS)


def backoff(failures: int) -> float:
    """Seconds to wait before reconnecting after `failures` consecutive failed attempts."""
    return 0.0 if failures <= 0 else min(0.05 * 2 ** (failures - 1), 1.0)


def _fail(futures: list[asyncio.Future[Any]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


class PeerLink:
    def __init__(
        self,
        address: str,
        session: aiohttp.ClientSession,
        config: Config,
        share_of: ShareOf,
        observe_frame: Callable[[float], object] | None = None,
    ) -> None:
        self.address = address
        self.frames_sent = 0  # replication frames (SLOTS, REPLICATE, READ) written
        self._observe_frame = observe_frame  # seconds from writing such a frame to its reply
        self._share_of = share_of
        self._session = session
        self._config = config
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._seals: dict[aiohttp.ClientWebSocketResponse, peer_auth.FrameSeal] = {}
        self._connect_lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._next_id = 1
        # request id -> (reply handler, its deadline, when a replication frame was written)
        self._waiting: dict[int, tuple[ReplyHandler, asyncio.TimerHandle, float | None]] = {}
        self._sent_on: dict[int, aiohttp.ClientWebSocketResponse] = {}  # request -> connection
        # per key: the state to send, the futures waiting for it, its receipts
        self._writes: dict[Key, tuple[PNCounter, list[StateFuture], dict[str, Receipt]]] = {}
        self._reads: dict[Key, list[asyncio.Future[PNCounter | None]]] = {}
        # per actor (the node's current one, or its previous one across a rotation), per
        # key: the slot values to send and the futures waiting for them
        self._slots: dict[str, dict[Key, tuple[int, int, list[StateFuture]]]] = {}
        # per frame kind: the traceparent the next frame carries (one of its writes' contexts)
        self._traces: dict[int, str] = {}
        self._wakeup = asyncio.Event()
        self._turn = 0  # index into FRAME_KINDS: whose turn the next frame is
        self._inflight = asyncio.Semaphore(config.max_inflight_frames)
        # A fresh context: the link outlives the request that happened to open it, and must
        # not log under that request's trace id.
        self._sender = asyncio.create_task(
            self._send_loop(), name=f"peer-send-{address}", context=contextvars.Context()
        )
        self._reader: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[bool]] = set()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def backlog(self) -> int:
        return len(self._writes) + len(self._reads) + sum(map(len, self._slots.values()))

    # -- queued, group-committed operations ------------------------------------------------

    def replicate(
        self,
        key: Key,
        state: PNCounter,
        trace: str | None = None,
        receipts: Mapping[str, Receipt] | None = None,
    ) -> asyncio.Future[PNCounter | None]:
        """Send state (a partial or a full state) to merge, with the key's idempotency
        receipts if any; resolves to the peer's merged state, or None when it equals ours.
        `trace`: the traceparent of the write's span."""
        if trace is not None:
            self._traces.setdefault(wire.REPLICATE, trace)
        future: asyncio.Future[PNCounter | None] = asyncio.get_running_loop().create_future()
        queued = self._writes.get(key)
        if queued is None:
            self._writes[key] = (state, [future], dict(receipts or {}))
        else:
            queued[1].append(future)
            if receipts:  # in place: a hot key's queued receipts are never copied
                crdt_receipts.merge_into(queued[2], receipts)
            self._writes[key] = (queued[0].merge(state), queued[1], queued[2])
        self._wakeup.set()
        return future

    def replicate_slot(
        self, key: Key, actor: str, p: int, n: int, trace: str | None = None
    ) -> asyncio.Future[PNCounter | None]:
        """replicate() of this node's own actor slot (p, n), the common write, which travels
        in the compact SLOTS frame. The caller names the actor (the cluster's current one):
        slots queued before the node moved to a new incarnation still go out under theirs."""
        if trace is not None:
            self._traces.setdefault(wire.SLOTS, trace)
        future: asyncio.Future[PNCounter | None] = asyncio.get_running_loop().create_future()
        slots = self._slots.setdefault(actor, {})
        queued = slots.get(key)
        if queued is None:
            slots[key] = (p, n, [future])
        else:
            queued[2].append(future)
            slots[key] = (max(p, queued[0]), max(n, queued[1]), queued[2])
        self._wakeup.set()
        return future

    def read(self, key: Key, trace: str | None = None) -> asyncio.Future[PNCounter | None]:
        """The peer's state of key, or None when it equals ours."""
        if trace is not None:
            self._traces.setdefault(wire.READ, trace)
        future: asyncio.Future[PNCounter | None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(key, []).append(future)
        self._wakeup.set()
        return future

    async def _send_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._config.replication_window_s:
                await asyncio.sleep(self._config.replication_window_s)
            while self._slots or self._writes or self._reads:
                await self._inflight.acquire()
                kind, body, waiting = self._next_frame()
                trace = self._traces.pop(kind, None)
                try:
                    await self._send_frame(kind, body, self._states_reply(waiting), trace=trace)
                except asyncio.CancelledError:
                    # The link is closing with this frame in hand: its writers must hear so
                    # now, not wait for a reply that will never be read.
                    _fail([f for futures in waiting for f in futures], PeerError("link closed"))
                    raise

    def _next_frame(self) -> tuple[int, Any, list[list[StateFuture]]]:
        """The next frame to send: its kind, body, and the futures of each of its keys.

        Kinds take turns (own slots, states, reads), so a steady stream of one kind cannot
        hold another back: under load a keyed write's receipt (a REPLICATE entry) would
        otherwise wait for as long as plain increments (SLOTS) keep coming."""
        for _ in range(len(FRAME_KINDS)):
            kind = FRAME_KINDS[self._turn]
            self._turn = (self._turn + 1) % len(FRAME_KINDS)
            share_of = self._share_of
            if kind == wire.SLOTS and self._slots:
                actor = next(iter(self._slots))
                slots = self._slots.pop(actor)
                flat: list[Any] = []
                for key, (p, n, _) in slots.items():
                    flat += (*key, p, n, share_of(key))
                return kind, [actor, flat], [futures for _, _, futures in slots.values()]
            if kind == wire.REPLICATE and self._writes:
                writes, self._writes = self._writes, {}
                body = [
                    [list(k), pn_to_wire(s), share_of(k), crdt_receipts.to_wire(r)]
                    if r
                    else [list(k), pn_to_wire(s), share_of(k)]
                    for k, (s, _, r) in writes.items()
                ]
                return kind, body, [futures for _, futures, _ in writes.values()]
            if kind == wire.READ and self._reads:
                reads, self._reads = self._reads, {}
                body = [[list(key), share_of(key)] for key in reads]
                return kind, body, list(reads.values())
        raise AssertionError("_next_frame called with nothing queued")

    def _states_reply(self, waiting: list[list[asyncio.Future[PNCounter | None]]]) -> ReplyHandler:
        """A reply handler that hands the i-th state (or None) to the i-th key's futures."""

        def on_reply(ok: bool, payload: Any) -> None:
            try:
                if not ok:
                    raise PeerError(f"{self.address}: {payload}")
                states = wire.states_from_wire(payload, len(waiting))
            except Exception as error:
                _fail([f for futures in waiting for f in futures], PeerError(str(error)))
                return
            for futures, state in zip(waiting, states, strict=True):
                for future in futures:
                    if not future.done():
                        future.set_result(state)

        return on_reply

    # -- plain request/response ----------------------------------------------------------

    async def call(self, kind: int, body: Any, timeout: float, trace: str | None = None) -> Any:
        """One request, one reply; raises PeerError on failure or timeout."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_reply(ok: bool, payload: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(payload)
            else:
                future.set_exception(PeerError(f"{self.address}: {payload}"))

        await self._inflight.acquire()
        try:
            await self._send_frame(kind, body, on_reply, timeout, trace)
            return await future
        except asyncio.CancelledError:
            # The caller gave up (a gossip exchange's deadline), maybe while the frame was
            # still connecting, and _send_frame forgot the request: its reply or timeout, when
            # it comes, has no one to tell.
            future.cancel()
            raise

    # -- frames ----------------------------------------------------------------------------

    async def _send_frame(
        self,
        kind: int,
        body: Any,
        on_reply: ReplyHandler,
        timeout: float | None = None,
        trace: str | None = None,
    ) -> None:
        """Send one request frame; the caller holds an in-flight permit, released on reply."""
        request_id = self._next_id
        self._next_id += 1
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout or self._config.request_timeout_s, self._expire, request_id)
        self._waiting[request_id] = (on_reply, timer, None)
        ws = None
        try:
            # A peer that stopped reading (SIGSTOP, a full socket) must not hold the sender.
            async with asyncio.timeout(timeout or self._config.request_timeout_s):
                ws = await self._connect()
                self._sent_on[request_id] = ws
                seal = self._seals.get(ws)
                if seal is None:
                    raise ConnectionError("connection lost")
                await ws.send_bytes(seal.seal(wire.encode(kind, request_id, body, trace)))
            if kind in REPLICATION_KINDS and request_id in self._waiting:
                self.frames_sent += 1
                self._waiting[request_id] = (on_reply, timer, loop.time())
        except asyncio.CancelledError:
            # Whoever sends gave up on it: forget the request now rather than at its
            # deadline, so the in-flight permit comes back and no one is told of a late
            # reply (which finds no request and is dropped).
            self._forget(request_id)
            raise
        except Exception as error:
            if isinstance(error, TimeoutError) and ws is not None and self._ws is ws:
                self._ws = None  # a half-written frame leaves the stream unusable
                closing = asyncio.create_task(ws.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            self._settle(request_id, False, f"unreachable: {type(error).__name__} {error}")

    def _forget(self, request_id: int) -> tuple[ReplyHandler, float | None] | None:
        """Drop a request's bookkeeping and give back its in-flight permit; its reply
        handler and when it was written, or None if it was already settled."""
        entry = self._waiting.pop(request_id, None)
        self._sent_on.pop(request_id, None)
        if entry is None:
            return None
        on_reply, timer, sent_at = entry
        timer.cancel()
        self._inflight.release()
        return on_reply, sent_at

    def _settle(self, request_id: int, ok: bool, payload: Any) -> None:
        entry = self._forget(request_id)
        if entry is None:
            return
        on_reply, sent_at = entry
        if ok and sent_at is not None and self._observe_frame is not None:
            self._observe_frame(asyncio.get_running_loop().time() - sent_at)
        on_reply(ok, payload)

    def _expire(self, request_id: int) -> None:
        self._settle(request_id, False, "timed out")

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        async with self._connect_lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            # Wait out the backoff rather than fail at once: a peer that was not listening
            # a moment ago (a node starting) is usually there now. The caller's deadline
            # bounds the wait, so a peer that stays away still fails the request in time.
            pause = self._retry_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            headers = peer_auth.sign(
                self._config.cluster_secret, "GET", PEER_PATH, self._config.node_id, self.address
            )
            try:
                ws = await self._session.ws_connect(
                    f"http://{self.address}{PEER_PATH}",
                    headers=headers,
                    max_msg_size=wire.MAX_FRAME_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                    # Uncompressed frames are written at once, in the order they are
                    # sealed; compressed large ones may be written later (FrameSeal).
                    compress=0,
                )
            except Exception:
                self._failures += 1
                self._retry_at = time.monotonic() + backoff(self._failures)
                raise
            self._failures = 0
            self._ws = ws
            self._seals[ws] = peer_auth.client_seal(
                self._config.cluster_secret, headers, self.address
            )
            self._reader = asyncio.create_task(
                self._read_loop(ws), name=f"peer-read-{self.address}", context=contextvars.Context()
            )
            return ws

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        seal = self._seals[ws]
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    kind, request_id, body = wire.decode(seal.open(message.data))
                    if kind != wire.REPLY or not isinstance(body, list) or len(body) != 2:
                        raise wire.ProtocolError("expected a reply [ok, payload]")
                except (wire.ProtocolError, peer_auth.FrameRejected) as error:
                    log.warning("bad reply from %s: %s", self.address, error)
                    await ws.close()  # what follows on this stream cannot be trusted either
                    break
                self._settle(request_id, bool(body[0]), body[1])
        finally:
            self._seals.pop(ws, None)
            if self._ws is ws:
                self._ws = None
            # Only what went out on this connection is lost; a newer one may already carry
            # requests of its own.
            for request_id in [r for r, sent_on in self._sent_on.items() if sent_on is ws]:
                self._settle(request_id, False, "connection lost")

    async def close(self, reason: str = "node shutting down") -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        error = PeerError(reason)
        for _, write_futures, _ in self._writes.values():
            _fail(list(write_futures), error)
        for read_futures in self._reads.values():
            _fail(list(read_futures), error)
        for slots in self._slots.values():
            for _, _, slot_futures in slots.values():
                _fail(list(slot_futures), error)

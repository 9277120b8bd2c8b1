"""Outgoing peer links: one persistent WebSocket per peer, group-committed frames.

`replicate()`, `replicate_slot()` and `read()` queue a key (frame_queue.py); a sender task
writes the queue out one frame per turn, so every update bound for a peer within a loop turn
(or while earlier frames are in flight) shares one frame.

`written(future)` says when the frame carrying a queued write has been handed to the
connection (on loopback, the peer's socket; elsewhere the kernel's send buffer): what a
consistency=one write waits for (coordination/quorum.py, QuorumWait.sent_on), since
answering before would let a coordinator killed right after its 200 take the update with it
(tests/cluster/test_consistency_one.py lost 19 of 20 such writes).

A connection whose peer stops answering (no pong to the heartbeat, dial.py) makes the link
dead: all it holds fails at once with PeerError, so coordinators count other replicas, and
so do new frames until a redial on a fresh connection works. A peer that closes or refuses
the connection (restarted, not listening yet) is reconnected by the next frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.config import Config
from node.base.errors import PeerError, PeerUnreachable
from node.base.keys import Key
from node.cluster import peer_auth, wire
from node.cluster.dial import PEER_PATH, backoff, dial, timed_out
from node.cluster.frame_queue import (
    FRAME_KINDS,
    BatchFuture,
    FrameQueue,
    ShareOf,
    StateFuture,
    Waiting,
    fail,
)

log = logging.getLogger("counters.peers")
__all__ = ["PEER_PATH", "PeerLink", "ShareOf", "backoff"]
ReplyHandler = Callable[[bool, Any], None]
REPLICATION_KINDS = frozenset(FRAME_KINDS)
REDIAL_BACKOFF_CAP_S = 0.5  # a dead link's redials: soon enough to be back within a second


class NotSent(str):
    """Why a request failed before any of it was written: no connection could be had."""


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
        self._queue = FrameQueue(share_of)
        # a queued write's reply future -> its notice that its frame was written (written())
        self._notices: dict[asyncio.Future[Any], asyncio.Future[bool]] = {}
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
        self._wakeup = asyncio.Event()
        self._inflight = asyncio.Semaphore(config.max_inflight_frames)
        # A fresh context: the link outlives the request that happened to open it, and must
        # not log under that request's trace id.
        self._sender = self._start_sender()
        self._reader: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[bool]] = set()
        self._dead: str | None = None  # why the link was judged dead, until a redial works
        self._redial: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def busy(self) -> bool:
        return bool(self._waiting)  # requests sent or being sent, not yet answered

    @property
    def dead(self) -> bool:
        """The peer stopped answering on this link and no redial has worked since."""
        return self._dead is not None

    @property
    def backlog(self) -> int:
        return self._queue.backlog

    # -- queued, group-committed operations ------------------------------------------------

    def replicate(
        self,
        key: Key,
        state: PNCounter,
        trace: str | None = None,
        receipts: Mapping[str, Receipt] | None = None,
    ) -> StateFuture:
        """Send state (a partial or a full state) to merge, with the key's idempotency
        receipts if any; resolves to the peer's merged state, or None when it equals ours.
        `trace`: the traceparent of the write's span."""
        future = self._queue.replicate(key, state, trace, receipts)
        self._wakeup.set()
        return future

    def replicate_slot(
        self, key: Key, actor: str, p: int, n: int, trace: str | None = None
    ) -> StateFuture:
        """replicate() of this node's own actor slot (p, n), the common write, which travels
        in the compact SLOTS frame. The caller names the actor (the cluster's current one):
        slots queued before the node moved to a new incarnation still go out under theirs."""
        future = self._queue.replicate_slot(key, actor, p, n, trace)
        self._wakeup.set()
        return future

    def replicate_many(
        self,
        items: list[tuple[Key, PNCounter, Mapping[str, Receipt] | None]],
        trace: str | None = None,
    ) -> BatchFuture:
        """replicate() of many distinct keys (key, state, receipts) under one future, which
        resolves to the peer's answer for each key, in order."""
        future = self._queue.replicate_many(items, trace)
        self._wakeup.set()
        return future

    def replicate_slots(
        self,
        actor: str,
        items: list[tuple[Key, int, int]],
        trace: str | None = None,
        keys: list[Key] | None = None,
    ) -> BatchFuture:
        """replicate_slot() of many distinct keys (key, p, n) under one future, which
        resolves to the peer's answer for each key, in order. `keys`: the items' keys, if
        the caller has them (shared by the links of a write, never changed)."""
        future = self._queue.replicate_slots(actor, items, trace, keys)
        self._wakeup.set()
        return future

    def read(self, key: Key, trace: str | None = None) -> StateFuture:
        """The peer's state of key, or None when it equals ours."""
        future = self._queue.read(key, trace)
        self._wakeup.set()
        return future

    def written(self, reply: asyncio.Future[Any]) -> asyncio.Future[bool]:
        """For a write just queued (its reply future): True once the frame that carries it
        has been handed to the connection, False if it fails before."""
        notice: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if reply.done():
            notice.set_result(False)
        else:
            self._notices[reply] = notice
            reply.add_done_callback(lambda done: self._notify([done], False))
        return notice

    def _notify(self, waiting: Iterable[asyncio.Future[Any]], sent_frame: bool) -> None:
        """sent_frame: the frame carrying these was written, unless its sending failed
        (which fails their futures at once) or they are done otherwise (closed, replied)."""
        for future in waiting:
            notice = self._notices.pop(future, None)
            if notice is not None and not notice.done():
                failed = future.done() and (future.cancelled() or future.exception())
                notice.set_result(sent_frame and not failed)

    def _start_sender(self) -> asyncio.Task[None]:
        sender = asyncio.create_task(
            self._send_loop(), name=f"peer-send-{self.address}", context=contextvars.Context()
        )
        sender.add_done_callback(self._sender_ended)
        return sender

    def _sender_ended(self, sender: asyncio.Task[None]) -> None:
        """The sender never ends but by close(): a bug that ends it must not silence the
        link for good. Log it, fail what waits, and start a new sender."""
        if sender.cancelled() or self._closed:
            return
        log.error("sender of the link to %s failed", self.address, exc_info=sender.exception())
        self._queue.fail_all(PeerError(f"{self.address}: link sender failed"))
        self._sender = self._start_sender()

    async def _send_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._config.replication_window_s:
                await asyncio.sleep(self._config.replication_window_s)
            while self._queue:
                await self._inflight.acquire()
                if not self._queue:  # failed while we waited for a permit (the link died)
                    self._inflight.release()
                    break
                kind, body, waiting, trace = self._queue.next_frame()
                try:
                    await self._send_frame(kind, body, self._states_reply(waiting), trace=trace)
                except asyncio.CancelledError:
                    # The link is closing with this frame in hand: its writers must hear so
                    # now, not wait for a reply that will never be read.
                    fail(waiting.futures(), PeerError("link closed"))
                    raise
                if self._notices:
                    self._notify(waiting.futures(), True)

    def _states_reply(self, waiting: Waiting) -> ReplyHandler:
        """A reply handler that hands the i-th state (or None) to the i-th key's futures,
        with the receipts the peer sent beside it (wire.stated_to_wire), and each batch
        its keys' states."""

        def on_reply(ok: bool, payload: Any) -> None:
            try:
                if not ok:
                    raise PeerError(f"{self.address}: {payload}")
                states = wire.stated_replies_from_wire(payload, len(waiting.entries))
            except Exception as error:
                fail(waiting.futures(), PeerError(str(error)))
                return
            waiting.resolve(states)

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
                failed = PeerUnreachable if isinstance(payload, NotSent) else PeerError
                future.set_exception(failed(f"{self.address}: {payload}"))

        await self._inflight.acquire()
        try:
            await self._send_frame(kind, body, on_reply, timeout, trace)
            return await future
        except asyncio.CancelledError:
            # The caller gave up (a gossip exchange's deadline), maybe while the frame was
            # still connecting, and _send_frame forgot the request: its reply or timeout, when
            # it comes, has no one to tell. (cancel() silences an error its own deadline may
            # have set in the same loop turn.)
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
                if request_id not in self._waiting:
                    return  # settled while connecting (its deadline, or the link died)
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
            why = f"unreachable: {type(error).__name__} {error}"
            self._settle(request_id, False, NotSent(why) if ws is None else why)
            if isinstance(error, TimeoutError) and ws is not None and self._ws is ws:
                # A frame the peer would not take in time, half-written maybe: the stream
                # is unusable and the peer not reading.
                self._went_dead("a frame could not be written in time")

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
        if self._dead is not None:
            raise ConnectionError(f"link down ({self._dead}), redialling")
        async with self._connect_lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self._dead is not None:
                raise ConnectionError(f"link down ({self._dead}), redialling")
            # Wait out the backoff rather than fail at once: a peer that was not listening
            # a moment ago (a node starting) is usually there now. The caller's deadline
            # bounds the wait, so a peer that stays away still fails the request in time.
            pause = self._retry_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                return self._opened(*await dial(self._session, self._config, self.address))
            except Exception as error:
                self._failures += 1
                self._retry_at = time.monotonic() + backoff(self._failures)
                if timed_out(error):
                    self._went_dead("the handshake was not answered")
                raise

    def _opened(
        self, ws: aiohttp.ClientWebSocketResponse, seal: peer_auth.FrameSeal
    ) -> aiohttp.ClientWebSocketResponse:
        self._failures = 0
        self._ws = ws
        self._seals[ws] = seal
        self._reader = asyncio.create_task(
            self._read_loop(ws), name=f"peer-read-{self.address}", context=contextvars.Context()
        )
        return ws

    def _went_dead(self, why: str) -> None:
        """The peer stopped answering: close, fail all it holds, redial until a dial works."""
        if self._dead is not None or self._closed:
            return
        self._dead = why
        log.warning("link to %s is dead: %s; redialling", self.address, why)
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:  # in the background: no close frame will come
            self._closing.add(closing := asyncio.create_task(ws.close()))
            closing.add_done_callback(self._closing.discard)
        for request_id in list(self._waiting):
            self._settle(request_id, False, f"link dead: {why}")
        self._queue.fail_all(PeerError(f"{self.address}: link dead: {why}"))
        self._redial = asyncio.create_task(
            self._redial_loop(), name=f"peer-redial-{self.address}", context=contextvars.Context()
        )

    async def _redial_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(backoff(failures, REDIAL_BACKOFF_CAP_S))
            try:
                async with self._connect_lock:
                    self._opened(*await dial(self._session, self._config, self.address))
            except Exception as error:
                failures += 1
                log.debug("redialling %s failed: %s %s", self.address, type(error).__name__, error)
                continue
            log.info("link to %s is back after %s", self.address, self._dead)
            self._dead = None
            self._wakeup.set()
            return

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
                if timed_out(ws.exception()):
                    self._went_dead(f"no pong within {self._config.peer_heartbeat_s * 1.5:g}s")
            # Only what went out on this connection is lost; a newer one may already carry
            # requests of its own.
            for request_id in [r for r, sent_on in self._sent_on.items() if sent_on is ws]:
                self._settle(request_id, False, "connection lost")

    async def close(self, reason: str = "node shutting down") -> None:
        self._closed = True
        tasks = [t for t in (self._sender, self._redial) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._queue.fail_all(PeerError(reason))

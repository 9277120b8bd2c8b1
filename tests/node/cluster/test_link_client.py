"""The calling side of a peer link (PeerLink, PeerPool) against a real WebSocket peer that
misbehaves on command: it stays silent, drops the connection, holds its replies, or answers
with garbage. Each case checks what the link's callers rely on: a call fails with PeerError
in bounded time, no in-flight permit leaks, queued updates wait and then share one frame, and
the link reconnects and works afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.config import Config
from node.base.errors import PeerError
from node.cluster import peer_auth, wire
from node.cluster.links import PEER_PATH, PeerLink
from node.cluster.pool import PeerPool

SECRET = Config(node_id="x").cluster_secret  # the default both ends share
ACTOR = "caller:1"
KEY_A = ("t", "ns", "a")


class FakePeer:
    """A peer that speaks the protocol (handshake check, sealed frames, msgpack messages) and
    does what `mode` says with each request it receives:

    answer  reply [True, echo] to a call, [None, ...] to a replication frame
    hold    keep the request in `held` and answer nothing until release()
    close   close the connection on receiving it
    garbage answer with bytes that carry no valid MAC
    request answer with a sealed, well-formed request frame instead of a reply
    shape   answer with a sealed REPLY whose body is not [ok, payload]
    """

    def __init__(self) -> None:
        self.mode = "answer"
        self.handshake_delay = 0.0  # seconds before accepting a connection
        self.connections = 0
        self.received: list[tuple[int, int, Any]] = []  # (kind, request id, body) in order
        self.held: list[tuple[web.WebSocketResponse, peer_auth.FrameSeal, int, int, Any]] = []
        self.arrived = asyncio.Event()  # set at every received frame
        self.sockets: set[web.WebSocketResponse] = set()
        self.server: TestServer | None = None
        self.address = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PEER_PATH, self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.address = f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        assert self.server is not None
        await self.server.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = peer_auth.verify(
            SECRET, request.method, request.path, request.headers, time.time(), self.address
        )
        assert peer == "caller", "the link's handshake must verify"
        await asyncio.sleep(self.handshake_delay)
        seal = peer_auth.server_seal(SECRET, request.headers, self.address)
        ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME_BYTES, compress=False)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    await self._on_frame(ws, seal, message.data)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, seal: peer_auth.FrameSeal, data: bytes
    ) -> None:
        kind, request_id, body = wire.decode(seal.open(data))
        self.received.append((kind, request_id, body))
        self.arrived.set()
        if self.mode == "answer":
            await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, _answer(kind, body))))
        elif self.mode == "hold":
            self.held.append((ws, seal, kind, request_id, body))
        elif self.mode == "close":
            await ws.close()
        elif self.mode == "garbage":
            await ws.send_bytes(b"\x00" * 40)
        elif self.mode == "request":
            await ws.send_bytes(seal.seal(wire.encode(wire.GOSSIP, request_id, {})))
        elif self.mode == "shape":
            await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, "not a pair")))

    async def release(self, count: int) -> None:
        """Answer the first `count` held requests, in the order they came."""
        for ws, seal, kind, request_id, body in self.held[:count]:
            await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, _answer(kind, body))))
        del self.held[:count]

    async def wait_received(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


def _answer(kind: int, body: Any) -> list[Any]:
    if kind == wire.SLOTS:
        return [True, [None] * (len(body[1]) // wire.SLOT_FIELDS)]
    if kind in (wire.REPLICATE, wire.READ):
        return [True, [None] * len(body)]
    return [True, ["echo", body]]


def _slot_keys(body: Any) -> list[tuple[str, str, str]]:
    flat = body[1]
    return [tuple(flat[i : i + 3]) for i in range(0, len(flat), wire.SLOT_FIELDS)]


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    fake = FakePeer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def _link(peer: FakePeer, **settings: Any) -> tuple[PeerPool, PeerLink]:
    config = Config(node_id="caller", auth="none", **settings).validate()
    pool = PeerPool(config, lambda key: 0)
    return pool, pool.link(peer.address)


async def _call(link: PeerLink, body: Any, timeout: float) -> tuple[Any, float]:
    """A GOSSIP call (any request kind would do), bounded so a leaked permit fails the test
    rather than hanging it; the reply and the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout + 5.0):
        reply = await link.call(wire.GOSSIP, body, timeout)
    return reply, time.monotonic() - started


async def test_a_silent_peer_fails_the_call_within_its_timeout_and_frees_the_permit(
    peer: FakePeer,
):
    pool, link = await _link(peer, request_timeout_s=5.0, max_inflight_frames=2)
    try:
        reply, _ = await _call(link, {"n": 0}, 1.0)
        assert reply == ["echo", {"n": 0}]
        peer.mode = "hold"
        # More silent calls than there are permits: each must fail on its own timeout; a
        # permit kept by a failed call would leave the third waiting forever.
        for n in range(1, 4):
            started = time.monotonic()
            with pytest.raises(PeerError, match="timed out"):
                await _call(link, {"n": n}, 0.3)
            assert 0.3 <= time.monotonic() - started < 2.0
        assert [body for _, _, body in peer.received] == [{"n": n} for n in range(4)]
        peer.mode = "answer"
        reply, _ = await _call(link, {"n": 4}, 1.0)
        assert reply == ["echo", {"n": 4}]
        assert peer.connections == 1  # a timeout alone does not drop the connection
    finally:
        await pool.close()


async def test_a_peer_that_drops_the_connection_fails_pending_work_and_the_next_call_reconnects(
    peer: FakePeer,
):
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "hello", 1.0)
        peer.mode = "close"
        write = link.replicate_slot(KEY_A, ACTOR, 3, 0)
        started = time.monotonic()
        with pytest.raises(PeerError, match="connection lost"):
            async with asyncio.timeout(5):
                await write
        assert time.monotonic() - started < 5.0  # failed by the close, not the 10 s timeout
        peer.mode = "answer"
        assert await link.replicate_slot(KEY_A, ACTOR, 4, 0) is None
        reply, _ = await _call(link, "again", 5.0)
        assert reply == ["echo", "again"]
        assert peer.connections == 2
        assert link.connected
    finally:
        await pool.close()


async def test_frames_in_flight_stay_within_the_limit_and_queued_updates_share_the_next_frame(
    peer: FakePeer,
):
    pool, link = await _link(peer, request_timeout_s=10.0, max_inflight_frames=2)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        first = link.replicate_slot(("t", "ns", "k0"), ACTOR, 1, 0)
        await peer.wait_received(2)
        second = link.replicate_slot(("t", "ns", "k1"), ACTOR, 1, 0)
        await peer.wait_received(3)
        queued = [link.replicate_slot(("t", "ns", f"k{i}"), ACTOR, i, 0) for i in (2, 3, 4)]
        queued.append(link.replicate_slot(("t", "ns", "k2"), ACTOR, 7, 0))  # merged with k2's first
        for _ in range(20):  # turns of the loop for the sender, which must not send them
            await asyncio.sleep(0)
        assert link.frames_sent == 2
        assert link.backlog == 3
        assert len(peer.received) == 3
        await peer.release(1)  # one reply frees one permit: the three keys go in one frame
        await peer.wait_received(4)
        kind, _, body = peer.received[3]
        assert kind == wire.SLOTS
        assert _slot_keys(body) == [("t", "ns", "k2"), ("t", "ns", "k3"), ("t", "ns", "k4")]
        assert body[1][3] == 7  # k2's two updates travel as one entry, the larger slot value
        assert link.frames_sent == 3 and link.backlog == 0
        await peer.release(2)
        async with asyncio.timeout(5):
            assert await asyncio.gather(first, second, *queued) == [None] * 6
    finally:
        await pool.close()


@pytest.mark.parametrize("mode", ["garbage", "request", "shape"])
async def test_a_bad_reply_closes_the_link_and_fails_the_pending_call(
    peer: FakePeer, mode: str, caplog: pytest.LogCaptureFixture
):
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = mode
        with caplog.at_level(logging.WARNING, logger="counters.peers"):
            started = time.monotonic()
            with pytest.raises(PeerError, match="connection lost"):
                await _call(link, "bad", 10.0)
            assert time.monotonic() - started < 5.0  # by the close, not the timeout
        assert [r.message for r in caplog.records if "bad reply" in r.message], caplog.text
        peer.mode = "answer"
        reply, _ = await _call(link, "after", 5.0)
        assert reply == ["echo", "after"]
        assert peer.connections == 2
    finally:
        await pool.close()


async def test_a_reply_with_the_wrong_number_of_states_fails_those_writes_only(
    peer: FakePeer,
):
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        write = link.replicate_slot(KEY_A, ACTOR, 1, 0)
        await peer.wait_received(2)
        ws, seal, _, request_id, _ = peer.held.pop()
        await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, [True, [None, None]])))
        with pytest.raises(PeerError, match="wrong number of states"):
            async with asyncio.timeout(5):
                await write
        peer.mode = "answer"
        assert await link.replicate_slot(KEY_A, ACTOR, 2, 0) is None
        assert peer.connections == 1  # a well-framed reply keeps the stream in step
    finally:
        await pool.close()


async def test_a_call_cancelled_while_connecting_leaves_no_unretrieved_error(peer: FakePeer):
    pool, link = await _link(peer, request_timeout_s=10.0)
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        peer.handshake_delay = 0.6  # the call is cancelled before its frame is even sent
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.call(wire.GOSSIP, "late", 0.3), 0.1)
        await asyncio.sleep(0.4)  # past the call's own 0.3 s deadline, which then fires
        gc.collect()  # an orphaned future reports its unretrieved error when collected
        assert errors == []
        peer.handshake_delay = 0.0
        reply, _ = await _call(link, "after", 5.0)
        assert reply == ["echo", "after"]
    finally:
        loop.set_exception_handler(previous)
        await pool.close()


async def test_a_keyed_write_is_not_held_back_by_a_steady_stream_of_plain_ones(peer: FakePeer):
    """Frame kinds take turns: with every permit in use and one plain increment arriving per
    reply, a queued state with its receipt (a keyed write) still goes out within a turn."""
    pool, link = await _link(peer, request_timeout_s=10.0, max_inflight_frames=2)
    try:
        peer.mode = "hold"
        first = []
        for i in range(2):  # one frame each, so both permits are in use
            first.append(link.replicate_slot(("t", "ns", f"warm{i}"), ACTOR, 1, 0))
            await peer.wait_received(i + 1)
        receipt = Receipt(1, ACTOR, "fingerprint", 5)
        keyed = link.replicate(KEY_A, PNCounter.from_slot(ACTOR, 5, 0), receipts={"k": receipt})
        plain = []
        for i in range(6):  # a plain update queued before each reply frees a permit
            plain.append(link.replicate_slot(("t", "ns", f"plain{i}"), ACTOR, 1, 0))
            await peer.release(1)
            await peer.wait_received(3 + i)
        kinds = [kind for kind, _, _ in peer.received]
        assert wire.REPLICATE in kinds[2:4], kinds
        replicate = next(body for kind, _, body in peer.received if kind == wire.REPLICATE)
        assert replicate[0][3] == [["k", receipt.to_wire()]]  # the receipt rode with the state
        peer.mode = "answer"
        await peer.release(len(peer.held))
        async with asyncio.timeout(5):
            await asyncio.gather(*first, keyed, *plain)
    finally:
        await pool.close()


async def test_closing_a_link_fails_the_frame_it_was_still_sending(peer: FakePeer):
    """A link closed while a frame is on its way (the peer never finished the handshake)
    fails that frame's writes at once, rather than leaving them pending forever."""
    peer.handshake_delay = 30.0
    pool, link = await _link(peer, request_timeout_s=10.0)
    write = link.replicate_slot(KEY_A, ACTOR, 3, 0)
    await asyncio.sleep(0.2)  # let the sender take the frame and start connecting
    await pool.close()
    with pytest.raises(PeerError):
        async with asyncio.timeout(2):
            await write


async def test_a_batch_of_slots_shares_the_frame_and_gets_its_keys_answers_in_its_order(
    peer: FakePeer,
):
    """replicate_slots: one future for many keys, in the same frame as single-key writes of
    the same actor; it resolves to the peer's answer for each of its keys, in its own order."""
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        single = link.replicate_slot(("t", "ns", "k0"), ACTOR, 1, 0)
        batch = link.replicate_slots(
            ACTOR, [(("t", "ns", "k2"), 5, 0), (("t", "ns", "k0"), 2, 0), (("t", "ns", "k1"), 1, 1)]
        )
        await peer.wait_received(2)
        ws, seal, kind, request_id, body = peer.held.pop()
        assert kind == wire.SLOTS and link.frames_sent == 1
        keys = _slot_keys(body)
        assert keys == [("t", "ns", "k0"), ("t", "ns", "k2"), ("t", "ns", "k1")]
        assert body[1][3] == 2  # k0 once, its larger slot value
        theirs = PNCounter.empty().increment("other:1", 9)
        answers = [None, wire.stated_to_wire(theirs, {}), None]  # k2 differs at the peer
        await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, [True, answers])))
        async with asyncio.timeout(5):
            assert await single is None
            assert await batch == [(theirs, {}), None, None]  # k2, k0, k1
    finally:
        await pool.close()


async def test_a_single_write_joining_a_batchs_slot_gets_its_own_answer(peer: FakePeer):
    """A key queued by a batch first holds no future of its own; a single write of it that
    follows gets one, and a later batch's slots of the same key do not inherit it."""
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        first = link.replicate_slots(ACTOR, [(("t", "ns", "k0"), 1, 0), (("t", "ns", "k1"), 4, 0)])
        single = link.replicate_slot(("t", "ns", "k1"), ACTOR, 5, 0)
        await peer.wait_received(2)
        ws, seal, kind, request_id, body = peer.held.pop()
        assert kind == wire.SLOTS
        assert _slot_keys(body) == [("t", "ns", "k0"), ("t", "ns", "k1")]
        assert body[1][9] == 5  # k1 once, its larger slot value
        theirs = PNCounter.empty().increment("other:1", 2)
        answers = [None, wire.stated_to_wire(theirs, {})]
        await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, [True, answers])))
        async with asyncio.timeout(5):
            assert await single == (theirs, {})
            assert await first == [None, (theirs, {})]
        second = link.replicate_slots(ACTOR, [(("t", "ns", "k1"), 6, 0)])
        await peer.wait_received(3)
        ws, seal, kind, request_id, body = peer.held.pop()
        assert kind == wire.SLOTS and _slot_keys(body) == [("t", "ns", "k1")]
        await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, [True, [None]])))
        async with asyncio.timeout(5):
            assert await second == [None]
    finally:
        await pool.close()


async def test_a_link_that_dies_fails_the_batches_still_queued(peer: FakePeer):
    pool, link = await _link(peer, request_timeout_s=10.0, max_inflight_frames=1)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        sent = link.replicate_slot(KEY_A, ACTOR, 1, 0)  # takes the only permit
        await peer.wait_received(2)
        batch = link.replicate_slots(ACTOR, [(("t", "ns", "b"), 1, 0)])  # waits for a frame
    finally:
        await pool.close()
    for write in (sent, batch):
        with pytest.raises(PeerError):
            async with asyncio.timeout(2):
                await write


async def test_a_batch_of_states_shares_the_frame_with_receipts_merged_per_key(peer: FakePeer):
    """replicate_many: states with their receipts, one entry per key in the REPLICATE frame
    (a key also queued alone travels once, states and receipts merged), answered in order."""
    pool, link = await _link(peer, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        peer.mode = "hold"
        mine = PNCounter.empty().increment(ACTOR, 3)
        first = Receipt(1, ACTOR, "fp", 3)
        second = Receipt(2, ACTOR, "fp", 4)
        single = link.replicate(KEY_A, mine, receipts={"k#0": first})
        batch = link.replicate_many(
            [(("t", "ns", "b"), mine, None), (KEY_A, mine.increment(ACTOR, 1), {"k#1": second})]
        )
        await peer.wait_received(2)
        ws, seal, kind, request_id, body = peer.held.pop()
        assert kind == wire.REPLICATE
        updates = wire.updates_from_wire(body)
        assert [key for key, *_ in updates] == [KEY_A, ("t", "ns", "b")]
        assert updates[0][1] == mine.increment(ACTOR, 1)
        assert updates[0][3] == {"k#0": first, "k#1": second}
        theirs = PNCounter.empty().increment("other:1", 2)
        answers = [wire.stated_to_wire(theirs, {}), None]
        await ws.send_bytes(seal.seal(wire.encode(wire.REPLY, request_id, [True, answers])))
        async with asyncio.timeout(5):
            assert await single == (theirs, {})
            assert await batch == [None, (theirs, {})]  # b, then KEY_A
    finally:
        await pool.close()

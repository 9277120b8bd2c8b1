"""Peer link liveness against a real WebSocket peer that goes silent as a paused process does:
its connection stays open, it answers neither frames nor pings, and it does not complete a
new handshake. The link must notice within a heartbeat and a half, fail what it holds at
once, refuse new frames at once, and come back by itself when the peer answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from node.base.errors import PeerError
from node.cluster import peer_auth, wire
from tests.node.cluster.test_link_client import ACTOR, KEY_A, SECRET, FakePeer, _call, _link
from tests.support import eventually

HEARTBEAT_S = 0.2  # so a silent peer's link dies within 0.3 s


class PausablePeer(FakePeer):
    """A FakePeer that answers pings itself, so that pause() can silence everything."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def pause(self) -> None:
        self.paused = True
        self.mode = "hold"
        self.handshake_delay = 30.0  # a new connection's handshake is never answered

    def resume(self) -> None:
        self.paused = False
        self.mode = "answer"
        self.handshake_delay = 0.0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.handshake_delay)
        seal = peer_auth.server_seal(SECRET, request.headers, self.address)
        ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME_BYTES, autoping=False)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        try:
            async for message in ws:
                if message.type == WSMsgType.PING and not self.paused:
                    await ws.pong(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._on_frame(ws, seal, message.data)
        finally:
            self.sockets.discard(ws)
        return ws


@pytest.fixture
async def pausable() -> AsyncIterator[PausablePeer]:
    fake = PausablePeer()
    await fake.start()
    try:
        yield fake
    finally:
        fake.resume()
        await fake.stop()


async def test_a_silent_peer_kills_the_link_which_fails_fast_and_redials_when_it_answers(
    pausable: PausablePeer,
):
    pool, link = await _link(pausable, request_timeout_s=10.0, peer_heartbeat_s=HEARTBEAT_S)
    try:
        await _call(link, "connect", 1.0)
        assert pool.reachable(pausable.address) and not link.dead
        pausable.pause()
        started = time.monotonic()
        write = link.replicate_slot(KEY_A, ACTOR, 3, 0)
        call = asyncio.ensure_future(link.call(wire.GOSSIP, "silent", 10.0))
        with pytest.raises(PeerError, match="link dead"):
            async with asyncio.timeout(5):  # the request timeout is 10 s
                await write
        with pytest.raises(PeerError, match="link dead"):
            await call
        assert time.monotonic() - started < 5.0
        assert link.dead and not pool.reachable(pausable.address)

        # While dead, new work fails at once rather than waiting on the peer.
        with pytest.raises(PeerError, match="link down"):
            async with asyncio.timeout(1):
                await link.replicate_slot(KEY_A, ACTOR, 4, 0)
        assert link.backlog == 0

        pausable.resume()
        await eventually(lambda: not link.dead, "the link redialled", 5, every=0.02)
        assert pool.reachable(pausable.address)
        assert await link.replicate_slot(KEY_A, ACTOR, 5, 0) is None
        reply, _ = await _call(link, "after", 2.0)
        assert reply == ["echo", "after"]
    finally:
        await pool.close()


async def test_a_busy_peer_that_answers_pings_keeps_its_link(pausable: PausablePeer):
    """Replies held for several heartbeats (a slow request) do not kill a link whose peer
    still answers pings: only silence does."""
    pool, link = await _link(pausable, request_timeout_s=10.0, peer_heartbeat_s=HEARTBEAT_S)
    try:
        await _call(link, "connect", 1.0)
        pausable.mode = "hold"
        write = link.replicate_slot(KEY_A, ACTOR, 3, 0)
        await pausable.wait_received(2)
        await asyncio.sleep(HEARTBEAT_S * 5)  # many heartbeats, all answered
        assert not write.done() and not link.dead
        await pausable.release(1)
        async with asyncio.timeout(5):
            assert await write is None
        assert pausable.connections == 1
    finally:
        await pool.close()


async def test_keep_only_leaves_a_link_with_a_call_in_flight(pausable: PausablePeer):
    """An operator's admission calls a node that is not a member yet; a gossip round that
    ends meanwhile closes links to non-members, and must not cut that call off."""
    pool, link = await _link(pausable, request_timeout_s=10.0)
    try:
        await _call(link, "connect", 1.0)
        pausable.mode = "hold"
        call = asyncio.ensure_future(link.call(wire.GOSSIP, "admit", 5.0))
        await pausable.wait_received(2)
        assert await pool.keep_only(set()) == []  # busy: kept for now
        await pausable.release(1)
        async with asyncio.timeout(5):
            assert await call == ["echo", "admit"]
        assert await pool.keep_only(set()) == [pausable.address]
    finally:
        await pool.close()


async def test_writes_queued_behind_full_frames_when_the_link_dies_do_not_kill_its_sender(
    pausable: PausablePeer,
):
    """Every in-flight permit is held by a frame the silent peer never answers, and more
    writes wait in the queue for a permit. The dead link fails all of them (the queue
    empties) and gives the permits back: the sender, which was waiting for one, must not
    then take a frame from the empty queue and die. Before, it did (AssertionError in the
    sender task, logged nowhere), and no frame ever left that link again: after a partition
    healed, every quorum read through it timed out."""
    pool, link = await _link(
        pausable, request_timeout_s=10.0, peer_heartbeat_s=HEARTBEAT_S, max_inflight_frames=1
    )
    try:
        await _call(link, "connect", 1.0)
        pausable.pause()
        in_flight = link.replicate_slot(KEY_A, ACTOR, 1, 0)
        await pausable.wait_received(2)  # the connect call and this frame: the permit is held
        queued = link.replicate_slot(("t", "ns", "b"), ACTOR, 1, 0)
        for future in (in_flight, queued):
            with pytest.raises(PeerError, match="link dead"):
                async with asyncio.timeout(5):
                    await future
        pausable.resume()
        await eventually(lambda: not link.dead, "the link redialled", 5, every=0.02)
        async with asyncio.timeout(5):
            assert await link.replicate_slot(KEY_A, ACTOR, 2, 0) is None
            assert await link.read(KEY_A) is None
    finally:
        await pool.close()


async def test_a_sender_that_fails_is_logged_and_replaced(
    pausable: PausablePeer, caplog: pytest.LogCaptureFixture
):
    """Whatever bug ends a link's sender task, the link must not go quiet for good: the
    error is logged, what waited fails, and a new sender carries the next writes."""
    pool, link = await _link(pausable, request_timeout_s=5.0, peer_heartbeat_s=HEARTBEAT_S)
    try:
        await _call(link, "connect", 1.0)
        queue = link._queue
        real_next_frame = queue.next_frame

        def broken_once() -> Any:
            queue.next_frame = real_next_frame  # type: ignore[method-assign]
            raise RuntimeError("a bug in the sender")

        queue.next_frame = broken_once  # type: ignore[method-assign]
        with pytest.raises(PeerError, match="link sender failed"):
            async with asyncio.timeout(5):
                await link.replicate_slot(KEY_A, ACTOR, 1, 0)
        assert "sender of the link" in caplog.text and "a bug in the sender" in caplog.text
        async with asyncio.timeout(5):
            assert await link.replicate_slot(KEY_A, ACTOR, 2, 0) is None
    finally:
        await pool.close()

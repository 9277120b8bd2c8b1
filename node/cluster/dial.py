"""Opening one peer connection, and the policy around it: how long to wait before the next
attempt, and which ways of losing a connection mean the peer stopped answering.

A connection is an authenticated WebSocket with a heartbeat: after `peer_heartbeat_s`
without hearing anything from the peer, aiohttp pings it, and closes the connection when no
pong comes within half that (ServerTimeoutError). TCP_USER_TIMEOUT bounds how long the
kernel keeps retransmitting data the peer does not acknowledge (a dropped network), so a
dead connection is not kept alive by TCP's doubling retransmission back-off either.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

import aiohttp

from node.base.config import Config
from node.cluster import peer_auth, wire

PEER_PATH = "/peer/ws"


def backoff(failures: int, cap: float = 1.0) -> float:
    """Seconds to wait before reconnecting after `failures` consecutive failed attempts."""
    return 0.0 if failures <= 0 else min(0.05 * 2 ** (failures - 1), cap)


def dead_after(config: Config) -> float:
    """Seconds of silence (no reply, no pong) after which a link is judged dead."""
    return config.peer_heartbeat_s * 1.5


def timed_out(error: BaseException | None) -> bool:
    """Whether a connection ended because the peer stopped answering (a heartbeat without a
    pong, a handshake or a write that never completed, TCP's user timeout), as opposed to
    the peer closing or refusing it."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, TimeoutError) or getattr(error, "errno", None) == errno.ETIMEDOUT:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def dial(
    session: aiohttp.ClientSession, config: Config, address: str
) -> tuple[aiohttp.ClientWebSocketResponse, peer_auth.FrameSeal]:
    """A new connection to the peer at `address` and the seal for its frames; raises on
    failure, TimeoutError when the peer does not complete the handshake in time."""
    headers = peer_auth.sign(config.cluster_secret, "GET", PEER_PATH, config.node_id, address)
    # A peer whose kernel accepts the connection but whose process does not run (SIGSTOP)
    # never answers the handshake: bound it, or the attempt waits forever.
    async with asyncio.timeout(dead_after(config)):
        ws = await session.ws_connect(
            f"http://{address}{PEER_PATH}",
            headers=headers,
            max_msg_size=wire.MAX_FRAME_BYTES,
            timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            heartbeat=config.peer_heartbeat_s,
            # Uncompressed frames are written at once, in the order they are sealed;
            # compressed large ones may be written later (FrameSeal).
            compress=0,
        )
    _set_user_timeout(ws, dead_after(config))
    return ws, peer_auth.client_seal(config.cluster_secret, headers, address)


def _set_user_timeout(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = ws.get_extra_info("socket")
    if option is None or sock is None:
        return  # not Linux: the heartbeat alone notices a dead peer
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))

"""The peer endpoint's inline requests (node/http/peer_endpoint.py, PeerServer._serve): a
reply that cannot be encoded fails that one request, and the link goes on serving.

Each pair of nodes shares one peer WebSocket for replication, reads, fencing and change-feed
reads. A reply msgpack cannot carry (a number past its range) must reach its caller as an
error reply; closing the link for it would fail every other request in flight on it, from
every tenant. A malformed request still closes the link, as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import WSMsgType

from node.cluster import peer_auth, wire
from node.cluster.wire import ProtocolError
from node.http.peer_endpoint import PeerServer

KEY = b"k" * 32


class Socket:
    """The server's end of a peer WebSocket: the frames the peer sent, what came back."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.sent: list[bytes] = []
        self.closed: int | None = None

    async def _messages(self) -> AsyncIterator[Any]:
        for frame in self.frames:
            yield SimpleNamespace(type=WSMsgType.BINARY, data=frame)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int, message: bytes) -> None:
        self.closed = code


def serve(events: Callable[[Any], list[Any]], requests: int) -> tuple[list[Any], int | None]:
    """`requests` EVENTS requests on one link to a server answering them with `events`:
    the replies its peer reads, and the close code if the server closed the link."""
    config = SimpleNamespace(cluster_secret="secret", address="127.0.0.1:1")
    server = PeerServer(config, None, None, None, None, events=events)  # type: ignore[arg-type]
    peer = peer_auth.FrameSeal(KEY, sending=b"q", receiving=b"r")
    body = ["t", "ns", "", 0, 10]
    socket = Socket([peer.seal(wire.encode(wire.EVENTS, n, body)) for n in range(requests)])
    sealed = peer_auth.FrameSeal(KEY, sending=b"r", receiving=b"q")
    asyncio.run(server._serve(socket, sealed, "peer"))  # type: ignore[arg-type]
    return [wire.decode(peer.open(frame)) for frame in socket.sent], socket.closed


def test_an_unencodable_reply_fails_its_request_and_the_link_serves_on() -> None:
    answers = iter([[0, 0, [[1, "x", -(2**64), 0, 1, False, 1]]], [0, 0, []]])
    replies, closed = serve(lambda body: next(answers), 2)
    assert closed is None
    [(kind, first_id, first), (_, second_id, second)] = replies
    assert kind == wire.REPLY and (first_id, second_id) == (0, 1)
    assert first[0] is False and "encod" in first[1]
    assert second == [True, [0, 0, []]]


def test_a_malformed_request_still_closes_the_link() -> None:
    def refuse(body: Any) -> list[Any]:
        raise ProtocolError("bad events request")

    replies, closed = serve(refuse, 2)
    assert replies == [] and closed == 1002

"""The in-memory transport itself: lost messages time out, partitions cut one or both ways,
duplicates reach the peer twice, a killed peer refuses, and the same seed makes the same
choices. The other tests trust these faults to mean what they say."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.base.errors import InvalidBody, PeerError
from node.cluster import wire
from tests.inprocess.cluster import eventually
from tests.inprocess.network import Network

TIMEOUT = 0.05


class Peer:
    """A server that records what reached it and echoes the body."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def answer(self, kind: int, body: Any) -> Any:
        self.received.append((kind, body))
        await self.release.wait()
        if body == "bad":
            raise InvalidBody("no such thing")
        return body


def _network(seed: int = 0) -> tuple[Network, Peer]:
    network, peer = Network(seed), Peer()
    network.attach("b:1", peer.answer)
    return network, peer


async def test_a_request_reaches_the_peer_through_msgpack_and_its_reply_comes_back():
    network, peer = _network()
    assert await network.call("a:1", "b:1", wire.GOSSIP, ("x", 1), TIMEOUT) == ["x", 1]
    assert peer.received == [(wire.GOSSIP, ["x", 1])]  # a tuple arrives as msgpack gives it


async def test_an_error_reply_fails_the_caller_with_the_peers_message():
    network, _ = _network()
    with pytest.raises(PeerError, match="no such thing"):
        await network.call("a:1", "b:1", wire.GOSSIP, "bad", TIMEOUT)


async def test_a_dropped_request_never_arrives_and_times_out():
    network, peer = _network()
    network.drop(1.0, kinds=[wire.SLOTS])
    with pytest.raises(PeerError, match="timed out"):
        await network.call("a:1", "b:1", wire.SLOTS, [], TIMEOUT)
    assert peer.received == []
    assert network.dropped[wire.SLOTS] == 1
    assert await network.call("a:1", "b:1", wire.READ, [], TIMEOUT) == []  # other kinds pass


async def test_a_one_way_partition_loses_requests_one_way_and_replies_the_other():
    network, peer = _network()
    network.attach("a:1", peer.answer)
    network.partition(["b:1"], ["a:1"], one_way=True)
    assert not network.reachable("b:1", "a:1") and network.reachable("a:1", "b:1")
    with pytest.raises(PeerError, match="timed out"):
        await network.call("b:1", "a:1", wire.PUSH, 1, TIMEOUT)
    with pytest.raises(PeerError, match="timed out"):  # it arrived; its reply was lost
        await network.call("a:1", "b:1", wire.PUSH, 2, TIMEOUT)
    assert peer.received == [(wire.PUSH, 2)]
    network.heal()
    assert await network.call("b:1", "a:1", wire.PUSH, 3, TIMEOUT) == 3


async def test_a_duplicated_request_reaches_the_peer_twice_and_answers_once():
    network, peer = _network()
    network.duplicate(1.0)
    assert await network.call("a:1", "b:1", wire.PUSH, 7, TIMEOUT) == 7
    await eventually(lambda: len(peer.received) == 2, "the copy arrives")
    assert peer.received == [(wire.PUSH, 7), (wire.PUSH, 7)]


async def test_a_delay_holds_a_message_within_its_bounds():
    network, _ = _network()
    network.delay(0.2, 0.2, dst="b:1")
    with pytest.raises(PeerError, match="timed out"):
        await network.call("a:1", "b:1", wire.PUSH, 1, 0.1)
    assert await network.call("a:1", "b:1", wire.PUSH, 1, 0.5) == 1


async def test_a_killed_peer_refuses_and_its_requests_in_flight_are_lost():
    network, peer = _network()
    peer.release.clear()
    pending = asyncio.ensure_future(network.call("a:1", "b:1", wire.PUSH, 1, 1.0))
    await eventually(lambda: bool(peer.received), "the request arrives")
    await network.detach("b:1")
    with pytest.raises(PeerError, match="connection lost"):
        await pending
    with pytest.raises(PeerError, match="connection refused"):
        await network.call("a:1", "b:1", wire.PUSH, 1, 1.0)


async def test_tampering_rewrites_a_reply():
    network, _ = _network()
    network.tamper(wire.FORWARD, lambda payload: [{"value": "x"}], src="a:1")
    assert await network.call("a:1", "b:1", wire.FORWARD, [1], TIMEOUT) == [{"value": "x"}]
    assert await network.call("c:1", "b:1", wire.FORWARD, [1], TIMEOUT) == [1]


async def test_the_same_seed_makes_the_same_choices():
    async def outcomes(seed: int) -> list[bool]:
        network, _ = _network(seed)
        network.drop(0.5)
        found = []
        for _ in range(20):
            try:
                await network.call("a:1", "b:1", wire.PUSH, 1, 0.01)
                found.append(True)
            except PeerError:
                found.append(False)
        return found

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert True in first and False in first

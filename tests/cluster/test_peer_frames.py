"""The peer port of a live node under hostile frames: forged, replayed and generated ones are
refused before they touch state, and the node keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import PNCounter
from node.base.config import Config
from node.cluster import peer_auth, wire
from node.cluster.links import PEER_PATH
from tests.cluster.harness import Node, one_node

NS = "frames"
VICTIM = ("default", NS, "victim")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the whole module: Hypothesis runs many examples against it."""
    with one_node(tmp_path_factory.mktemp("frames")) as started:

        async def victim_at_5() -> None:
            async with aiohttp.ClientSession() as session:
                url = f"{started.url}/v1/namespaces/{NS}/counters/victim/increment"
                async with session.post(url, json={"delta": 5}) as response:
                    assert response.status == 200

        asyncio.run(victim_at_5())
        yield started


async def _exchange(node: Node, frames: list[bytes], seal_them: bool = True) -> list[Any]:
    """Open an authenticated peer connection, send frames, return what came back: decoded
    replies, or "closed" once the node closed the connection."""
    headers = peer_auth.sign(Config.cluster_secret, "GET", PEER_PATH, "tester", node.address)
    seal = peer_auth.client_seal(Config.cluster_secret, headers, node.address)
    answers: list[Any] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(node.url + PEER_PATH, headers=headers) as ws,
    ):
        for frame in frames:
            await ws.send_bytes(seal.seal(frame) if seal_them else frame)
            message = await ws.receive(timeout=5)
            if message.type != aiohttp.WSMsgType.BINARY:
                answers.append("closed")
                break
            answers.append(wire.decode(seal.open(message.data)))
    return answers


async def _victim(node: Node) -> int:
    async with aiohttp.ClientSession() as session:
        url = f"{node.url}/v1/namespaces/{NS}/counters/victim?consistency=all"
        async with session.get(url) as response:
            assert response.status == 200
            return int((await response.json())["value"])


def _push(key: tuple[str, str, str], state: PNCounter, request_id: int = 1) -> bytes:
    return wire.encode(wire.PUSH, request_id, wire.entries_to_wire([(key, state)]))


def test_forged_and_replayed_frames_close_the_link_and_change_nothing(node: Node):
    grow = _push(VICTIM, PNCounter.from_slot("intruder:1", 1000, 0))
    # Right handshake, wrong MAC: someone on the path injecting a frame
    forged = b"\0" * peer_auth.MAC_BYTES + grow
    assert asyncio.run(_exchange(node, [forged], seal_them=False)) == ["closed"]
    # A frame captured from another connection, replayed on a new one
    headers = peer_auth.sign(Config.cluster_secret, "GET", PEER_PATH, "tester", node.address)
    captured = peer_auth.client_seal(Config.cluster_secret, headers, node.address).seal(grow)
    assert asyncio.run(_exchange(node, [captured], seal_them=False)) == ["closed"]
    # Authentic but hostile: nested 100,000 arrays deep, refused by the decoder's depth bound
    deep = b"\x93\x04\x01" + b"\x91" * 100_000 + b"\xc0"
    assert asyncio.run(_exchange(node, [deep])) == ["closed"]
    assert asyncio.run(_victim(node)) == 5
    # The same frame twice on one connection: the first is honoured, the copy refused
    harmless = _push(("default", NS, "replayed"), PNCounter.from_slot("tester:1", 3, 0))
    sealed_twice = asyncio.run(_replay_on_one_connection(node, harmless))
    assert sealed_twice == [[True, None], "closed"]


async def _replay_on_one_connection(node: Node, frame: bytes) -> list[Any]:
    headers = peer_auth.sign(Config.cluster_secret, "GET", PEER_PATH, "tester", node.address)
    seal = peer_auth.client_seal(Config.cluster_secret, headers, node.address)
    sealed = seal.seal(frame)
    answers: list[Any] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(node.url + PEER_PATH, headers=headers) as ws,
    ):
        for _ in range(2):
            await ws.send_bytes(sealed)
            message = await ws.receive(timeout=5)
            if message.type != aiohttp.WSMsgType.BINARY:
                answers.append("closed")
                break
            answers.append(wire.decode(seal.open(message.data))[2])
    return answers


# msgpack values of every shape, and messages that look nearly right
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what msgpack can carry
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
kinds = st.sampled_from(sorted(wire.KINDS)) | st.integers(-5, 300)
messages = st.tuples(kinds, st.integers(-1, 2**32), values).map(
    lambda m: msgpack.packb(list(m), use_bin_type=True)
)
frames = messages | st.binary(max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=3))
def test_generated_frames_from_an_authenticated_peer_never_break_the_node(node: Node, batch):
    """Whatever an authenticated but broken peer sends, the node answers an error or closes
    the link; it never crashes, and a counter nobody named keeps its value."""
    answers = asyncio.run(_exchange(node, batch))
    for answer in answers:
        if answer != "closed":
            kind, _, body = answer
            assert kind == wire.REPLY and isinstance(body, list) and len(body) == 2
    assert asyncio.run(_victim(node)) == 5

"""Peer handshake signatures: the right secret, for this node, fresh, and only once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.cluster import peer_auth

ME = "127.0.0.1:7001"


def _sign(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "secret": "s3cret", "method": "GET", "path": "/peer/ws", "node_id": "n1",
        "target": ME, "now": 1000.0,
    }  # fmt: skip
    args.update(overrides)
    return peer_auth.sign(**args)  # type: ignore[arg-type]


def _verify(headers: object, now: float = 1000.0, **overrides: object) -> str | None:
    args: dict[str, object] = {"secret": "s3cret", "method": "GET", "path": "/peer/ws"}
    args.update(overrides)
    return peer_auth.verify(headers=headers, now=now, target=ME, **args)  # type: ignore[arg-type]


def test_a_fresh_signature_for_this_node_names_the_peer():
    assert _verify(_sign(), now=1010.0) == "n1"


def test_wrong_secret_path_target_node_or_stale_time_is_refused():
    headers = _sign()
    assert _verify(headers, secret="other") is None
    assert _verify(headers, path="/elsewhere") is None
    assert _verify(_sign(target="127.0.0.1:7002")) is None  # signed for another node
    assert _verify(headers, now=1031.0) is None
    assert _verify({**headers, peer_auth.NODE_HEADER: "n2"}) is None
    assert _verify({**headers, peer_auth.NONCE_HEADER: "0" * 32}) is None
    assert _verify({}) is None
    assert _verify({**headers, peer_auth.TIME_HEADER: "soon"}) is None


def test_a_captured_handshake_cannot_be_replayed():
    guard = peer_auth.ReplayGuard()
    headers = _sign()
    assert _verify(headers, guard=guard) == "n1"
    assert _verify(headers, now=1001.0, guard=guard) is None
    assert _verify(_sign(), now=1001.0, guard=guard) == "n1"  # a new nonce is fine


def _seals(headers: dict[str, str] | None = None) -> tuple[peer_auth.FrameSeal, ...]:
    headers = headers or _sign()
    return (
        peer_auth.client_seal("s3cret", headers, ME),
        peer_auth.server_seal("s3cret", headers, ME),
    )


def test_sealed_frames_open_in_order_both_ways():
    client, server = _seals()
    for payload in (b"", b"first", b"x" * 10_000):
        assert server.open(client.seal(payload)) == payload
        assert client.open(server.seal(payload[::-1])) == payload[::-1]


def test_altered_replayed_reordered_reflected_or_foreign_frames_are_refused():
    client, server = _seals()
    first, second = client.seal(b"one"), client.seal(b"two")
    altered = first[:-1] + b"X"
    with pytest.raises(peer_auth.FrameRejected):
        server.open(altered)
    with pytest.raises(peer_auth.FrameRejected):
        server.open(second)  # out of order: the first has not come yet
    assert server.open(first) == b"one"
    with pytest.raises(peer_auth.FrameRejected):
        server.open(first)  # the same frame again
    with pytest.raises(peer_auth.FrameRejected):
        client.open(first)  # a request sent back as if it were a reply
    other_client, other_server = _seals(_sign())  # another handshake: another key
    with pytest.raises(peer_auth.FrameRejected):
        other_server.open(first)
    with pytest.raises(peer_auth.FrameRejected):
        peer_auth.server_seal("wrong", _sign(), ME).open(other_client.seal(b"x"))


@given(st.binary(max_size=200))
def test_bytes_without_the_key_never_open(frame):
    _, server = _seals()
    with pytest.raises(peer_auth.FrameRejected):
        server.open(frame)

"""Peer handshake signatures: the right secret, for this node, fresh, and only once."""

from __future__ import annotations

from node import peer_auth

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

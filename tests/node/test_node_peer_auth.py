"""Peer handshake signatures: right secret and fresh time only."""

from __future__ import annotations

from node import peer_auth


def test_a_fresh_signature_names_the_peer():
    headers = peer_auth.sign("s3cret", "GET", "/peer/ws", "n1", now=1000.0)
    assert peer_auth.verify("s3cret", "GET", "/peer/ws", headers, now=1010.0) == "n1"


def test_wrong_secret_path_node_or_stale_time_is_refused():
    headers = peer_auth.sign("s3cret", "GET", "/peer/ws", "n1", now=1000.0)
    assert peer_auth.verify("other", "GET", "/peer/ws", headers, now=1000.0) is None
    assert peer_auth.verify("s3cret", "GET", "/elsewhere", headers, now=1000.0) is None
    assert peer_auth.verify("s3cret", "GET", "/peer/ws", headers, now=1031.0) is None
    forged = {**headers, peer_auth.NODE_HEADER: "n2"}
    assert peer_auth.verify("s3cret", "GET", "/peer/ws", forged, now=1000.0) is None
    assert peer_auth.verify("s3cret", "GET", "/peer/ws", {}, now=1000.0) is None
    bad_time = {**headers, peer_auth.TIME_HEADER: "soon"}
    assert peer_auth.verify("s3cret", "GET", "/peer/ws", bad_time, now=1000.0) is None

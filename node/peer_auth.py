"""Peer authentication: an HMAC of the cluster secret over the peer handshake.

A peer connection opens with headers naming the caller, a timestamp and
HMAC-SHA256(secret, method, path, node id, timestamp). The receiver accepts it only within a
replay window, so a captured handshake soon stops working. Client tokens never pass here.
"""

from __future__ import annotations

import hashlib
import hmac
import time

NODE_HEADER = "X-Counters-Node"
TIME_HEADER = "X-Counters-Time"
SIGNATURE_HEADER = "X-Counters-Signature"
REPLAY_WINDOW_S = 30.0


def _mac(secret: str, method: str, path: str, node_id: str, timestamp: str) -> str:
    message = "\n".join((method.upper(), path, node_id, timestamp)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    secret: str, method: str, path: str, node_id: str, now: float | None = None
) -> dict[str, str]:
    timestamp = f"{time.time() if now is None else now:.3f}"
    return {
        NODE_HEADER: node_id,
        TIME_HEADER: timestamp,
        SIGNATURE_HEADER: _mac(secret, method, path, node_id, timestamp),
    }


def verify(
    secret: str, method: str, path: str, headers: dict[str, str] | object, now: float
) -> str | None:
    """The authenticated peer's node id, or None."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    node_id, timestamp, signature = get(NODE_HEADER), get(TIME_HEADER), get(SIGNATURE_HEADER)
    if not (node_id and timestamp and signature):
        return None
    try:
        sent = float(timestamp)
    except ValueError:
        return None
    if abs(now - sent) > REPLAY_WINDOW_S:
        return None
    expected = _mac(secret, method, path, node_id, timestamp)
    return node_id if hmac.compare_digest(expected, signature) else None

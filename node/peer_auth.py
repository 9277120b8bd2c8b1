"""Peer authentication: an HMAC of the cluster secret over the peer handshake.

A peer connection opens with headers naming the caller, a timestamp, a nonce and
HMAC-SHA256(secret, method, path, node id, target HOST:PORT, timestamp, nonce). The receiver
accepts it only for itself, within a replay window, and once: a captured handshake cannot be
replayed, nor sent to another node. Client tokens never pass here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

NODE_HEADER = "X-Counters-Node"
TIME_HEADER = "X-Counters-Time"
SIGNATURE_HEADER = "X-Counters-Signature"
NONCE_HEADER = "X-Counters-Nonce"
REPLAY_WINDOW_S = 30.0


def _mac(secret: str, parts: tuple[str, ...]) -> str:
    return hmac.new(secret.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def sign(
    secret: str,
    method: str,
    path: str,
    node_id: str,
    target: str,
    now: float | None = None,
) -> dict[str, str]:
    """Headers proving the cluster secret for one request to `target` (its HOST:PORT)."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    nonce = secrets.token_hex(16)
    parts = (method.upper(), path, node_id, target, timestamp, nonce)
    return {
        NODE_HEADER: node_id,
        TIME_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: _mac(secret, parts),
    }


class ReplayGuard:
    """Nonces seen within the replay window, so a captured handshake works only once."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def first_use(self, nonce: str, now: float) -> bool:
        if len(self._seen) > 10_000 or (self._seen and next(iter(self._seen.values())) < now):
            self._seen = {n: t for n, t in self._seen.items() if t >= now}
        if nonce in self._seen:
            return False
        self._seen[nonce] = now + 2 * REPLAY_WINDOW_S
        return True


def verify(
    secret: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | object,
    now: float,
    target: str,
    guard: ReplayGuard | None = None,
) -> str | None:
    """The authenticated peer's node id, or None: wrong secret, path, target or time, or a
    nonce already used."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    node_id, timestamp = get(NODE_HEADER), get(TIME_HEADER)
    nonce, signature = get(NONCE_HEADER), get(SIGNATURE_HEADER)
    if not (node_id and timestamp and nonce and signature):
        return None
    try:
        sent = float(timestamp)
    except ValueError:
        return None
    if abs(now - sent) > REPLAY_WINDOW_S:
        return None
    expected = _mac(secret, (method.upper(), path, node_id, target, timestamp, nonce))
    if not hmac.compare_digest(expected, signature):
        return None
    if guard is not None and not guard.first_use(nonce, now):
        return None
    return str(node_id)

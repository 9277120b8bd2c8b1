"""Peer authentication: an HMAC of the cluster secret over each peer request and frame.

A peer connection (or request) opens with headers naming the caller, a timestamp, a nonce and
HMAC-SHA256(secret, method, path, node id, target HOST:PORT, timestamp, nonce). The receiver
accepts it only for itself, within a replay window, and once: a captured handshake cannot be
replayed, nor sent to another node. Client tokens never pass here.

Both ends then derive a session key from the secret and the handshake, and every frame
carries a MAC under it over its direction, its sequence number and its bytes
(`FrameSeal`): a frame forged, altered, replayed, reordered or moved to another connection
is refused before it is decoded.
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
MAC_BYTES = 16  # a truncated HMAC-SHA256 (128 bits) at the head of every frame


class FrameRejected(ValueError):
    """A frame whose MAC does not match: forged, altered, replayed or out of order."""


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


def session_key(secret: str, headers: Mapping[str, str], target: str) -> bytes:
    """The key both ends of an authenticated handshake share; nobody without the secret has
    it, and each handshake (its nonce) gets its own."""
    parts = ("frames", headers[NODE_HEADER], target, headers[TIME_HEADER], headers[NONCE_HEADER])
    return hmac.digest(secret.encode(), "\n".join(parts).encode(), "sha256")


class FrameSeal:
    """One connection's frames: `seal` prefixes a MAC over (direction, sequence, bytes),
    `open` checks one and strips it. Each direction counts its own frames from 0, and
    WebSocket frames arrive in order, so a frame that is not the next one is refused."""

    def __init__(self, key: bytes, *, sending: bytes, receiving: bytes) -> None:
        self._key = key
        self._sending, self._receiving = sending, receiving
        self._sent = self._received = 0

    def _mac(self, direction: bytes, sequence: int, payload: bytes) -> bytes:
        message = direction + sequence.to_bytes(8, "big") + payload
        return hmac.digest(self._key, message, "sha256")[:MAC_BYTES]

    def seal(self, payload: bytes) -> bytes:
        """Call right before the frame is written: sequence numbers follow call order."""
        mac = self._mac(self._sending, self._sent, payload)
        self._sent += 1
        return mac + payload

    def open(self, frame: bytes) -> bytes:
        payload = frame[MAC_BYTES:]
        expected = self._mac(self._receiving, self._received, payload)
        if len(frame) < MAC_BYTES or not hmac.compare_digest(expected, frame[:MAC_BYTES]):
            raise FrameRejected("frame MAC does not match: forged, altered, replayed or reordered")
        self._received += 1
        return payload


def client_seal(secret: str, headers: Mapping[str, str], target: str) -> FrameSeal:
    """The calling side's seal for a connection opened with `headers` (from `sign`)."""
    return FrameSeal(session_key(secret, headers, target), sending=b"q", receiving=b"r")


def server_seal(secret: str, headers: Mapping[str, str], target: str) -> FrameSeal:
    """The answering side's seal, for a handshake `verify` accepted."""
    return FrameSeal(session_key(secret, headers, target), sending=b"r", receiving=b"q")

"""Stable 64-bit hashes for placement.

Every node must map a counter to the same shard, across processes, machines and Python
versions. The built-in `hash()` is salted per process for str, so placement never uses it; it
uses BLAKE2b cut to 8 bytes and read as a big-endian unsigned integer instead.
"""

from __future__ import annotations

import hashlib

__all__ = ["hash64", "key_hash"]


def hash64(data: bytes) -> int:
    """The first 8 bytes of BLAKE2b(data), as an unsigned big-endian integer."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_hash(tenant: str, namespace: str, name: str) -> int:
    """hash64 of "tenant/namespace/name", the identity of a counter."""
    # surrogatepass makes the hash total (a lone surrogate cannot fail a request) while giving
    # the same bytes as plain UTF-8 for every well-formed string.
    return hash64(f"{tenant}/{namespace}/{name}".encode("utf-8", "surrogatepass"))

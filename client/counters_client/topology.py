"""The cluster's map as the client routes by it: which node coordinates a counter's shard.

Placement is the node's (ring/hashing.py, ring/ring.py): a counter's shard is the first 8
bytes of BLAKE2b("tenant/namespace/name"), big-endian, masked by the shard count (a power
of two); its coordinator is the first serving node of the shard's preference list. Pure:
no I/O, so routing is tested without a cluster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The node's name rule (node/http/validation.py): checked before an op enters a batch, since
# one bad name makes the node refuse the whole batch.
NAME_CHARS = re.compile(r"[A-Za-z0-9._:-]{1,200}")
SERVING = frozenset({"up", "leaving"})  # a leaving node serves until its hand-off is done
SHARD_CACHE_MAX = 1 << 20  # names whose shard is remembered, per shard count


def key_hash(tenant: str, namespace: str, name: str) -> int:
    """hash64 of "tenant/namespace/name", exactly as ring.hashing.key_hash computes it."""
    key = f"{tenant}/{namespace}/{name}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def valid_name(value: str) -> bool:
    return NAME_CHARS.fullmatch(value) is not None and ".." not in value and value != "."


def base_url(address: str, like: str) -> str:
    """The URL of a node at HOST:PORT, with the scheme of a seed URL."""
    scheme = urlsplit(like).scheme or "http"
    return f"{scheme}://{address}"


@dataclass(frozen=True)
class Topology:
    """One node's answer to GET /v1/topology."""

    epoch: int
    checksum: str
    shards: int
    tenant: str
    urls: Mapping[str, str]  # node id -> base URL
    status: Mapping[str, str]  # node id -> up, leaving, down, joining, ...
    preference_lists: tuple[tuple[str, ...], ...]
    _shard_cache: dict[tuple[str, str], int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, body: Any, seed_url: str) -> Topology:
        """Build from the JSON answer; ValueError when it is not one."""
        try:
            shards = int(body["shards"])
            nodes = body["nodes"]
            urls = {
                node_id: base_url(str(info["address"]), seed_url)
                for node_id, info in nodes.items()
                if info.get("address")
            }
            status = {node_id: str(info.get("status", "up")) for node_id, info in nodes.items()}
            table = tuple(tuple(str(n) for n in entry) for entry in body["preference_lists"])
            topology = cls(
                int(body["epoch"]), str(body["checksum"]), shards, str(body["tenant"]),
                urls, status, table,
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"not a topology: {error!r}") from None
        if shards < 1 or shards & (shards - 1) or len(table) != shards:
            raise ValueError(f"a topology of {shards} shards with {len(table)} lists")
        return topology

    def shard_of(self, namespace: str, name: str) -> int:
        cache = self._shard_cache
        shard = cache.get((namespace, name))
        if shard is None:
            if len(cache) >= SHARD_CACHE_MAX:
                cache.clear()
            shard = key_hash(self.tenant, namespace, name) & (self.shards - 1)
            cache[(namespace, name)] = shard
        return shard

    def coordinator(self, shard: int, avoid: Iterable[str] = ()) -> str | None:
        """The URL of the shard's first serving replica not in `avoid` (node ids); the first
        replica not avoided when none serves; None when the list is empty."""
        entry = self.preference_lists[shard]
        avoided = set(avoid)
        fallback = None
        for node_id in entry:
            url = self.urls.get(node_id)
            if url is None or node_id in avoided:
                continue
            if self.status.get(node_id) in SERVING:
                return url
            fallback = fallback or url
        return fallback or next((self.urls[n] for n in entry if n in self.urls), None)

    def node_of(self, url: str) -> str | None:
        for node_id, known in self.urls.items():
            if known == url:
                return node_id
        return None

    def serving_urls(self) -> list[str]:
        return [url for node_id, url in self.urls.items() if self.status.get(node_id) in SERVING]

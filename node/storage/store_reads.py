"""Reads across a namespace or a shard without building states per counter: listing pages
(`scan`), and the values node/realtime indexes. A base class of CounterStore (store.py),
apart so that each module stays small; it reads the store's nested dicts."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from crdt import PNCounter
from crdt import packed as pk
from node.base.keys import Key

HEADER_SIZE = 16  # store.HEADER's size: a record's packed state starts there


class NamespaceReads:
    """Read-only views over the store's records (see CounterStore)."""

    # the store's (CounterStore sets them)
    _shards: dict[int, dict[str, dict[str, dict[str, bytes]]]]
    _tenant_counts: dict[int, dict[str, int]]

    def _shard_records(self, shard: int) -> Iterator[tuple[Key, bytes]]:
        raise NotImplementedError

    def _state(self, record: bytes) -> PNCounter:
        raise NotImplementedError

    def shard_values(self, shard: int) -> Iterator[tuple[Key, int]]:
        """(key, value) for each counter of a shard, without building states."""
        value = pk.value
        for key, record in self._shard_records(shard):
            yield key, value(record, HEADER_SIZE)

    def namespace_size(self, shard: int, tenant: str, namespace: str) -> int:
        """How many counters a shard holds in (tenant, namespace)."""
        return len(self._shards.get(shard, {}).get(tenant, {}).get(namespace, ()))

    def namespace_values(
        self, shard: int, tenant: str, namespace: str
    ) -> Iterator[tuple[str, int]]:
        """(name, value) for each counter of a shard in (tenant, namespace)."""
        value = pk.value
        for name, record in self._shards.get(shard, {}).get(tenant, {}).get(namespace, {}).items():
            yield name, value(record, HEADER_SIZE)

    def tenant_counts(self, shard: int) -> dict[str, int]:
        """How many counters each tenant has in a shard (read-only)."""
        return self._tenant_counts.get(shard, {})

    def scan(
        self, tenant: str, namespace: str, prefix: str, after: str, limit: int, shards: set[int]
    ) -> list[tuple[str, PNCounter]]:
        """Names in (tenant, namespace) starting with prefix, sorted, greater than `after`:
        the first `limit` of them, from the namespace's own dicts."""
        held = self._shards
        spaces = [
            names
            for shard in shards
            if (names := held.get(shard, {}).get(tenant, {}).get(namespace)) is not None
        ]
        chosen = heapq.nsmallest(
            limit,
            (
                name
                for names in spaces
                for name in names
                if name > after and name.startswith(prefix)
            ),
        )
        state = self._state
        return [
            (name, state(record))
            for name in chosen
            for names in spaces
            if (record := names.get(name)) is not None
        ]

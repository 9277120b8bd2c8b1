"""Reads across a namespace or a shard without building states per counter: listing pages
(`scan`), and the values node/realtime indexes. A base class of CounterStore (store.py),
apart so that each module stays small; it reads the store's nested dicts."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import repeat, starmap
from operator import sub

from crdt import PNCounter
from crdt import packed as pk
from node.base.keys import Key
from node.storage.name_order import NameOrder

HEADER_SIZE = 16  # store.HEADER's size: a record's packed state starts there
ONE_SLOT = HEADER_SIZE + pk.SLOT_SIZE  # the size of a record of one slot (most, at N=1)
_ONE_SLOT_COUNTS = struct.Struct(f"<{HEADER_SIZE + 4}xQQ")  # such a record's p and n


def _values(records: list[bytes]) -> Iterator[int]:
    """Each record's value; records of one slot each, all unpacked in one C call."""
    if set(map(len, records)) == {ONE_SLOT}:
        return starmap(sub, _ONE_SLOT_COUNTS.iter_unpack(b"".join(records)))
    return map(pk.value, records, repeat(HEADER_SIZE))


class NamespaceReads:
    """Read-only views over the store's records (see CounterStore)."""

    # the store's (CounterStore sets them)
    _shards: dict[int, dict[str, dict[str, dict[str, bytes]]]]
    _tenant_counts: dict[int, dict[str, int]]
    _name_order: NameOrder | None = None  # listing pages' sorted names, made on the first

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

    def space_values(self, shard: int) -> Iterator[tuple[str, str, dict[str, int]]]:
        """(tenant, namespace, name -> value) for each namespace of a shard: a new dict each,
        made by a loop in C around pk.value (what a window restore compares, a million)."""
        for tenant, spaces in self._shards.get(shard, {}).items():
            for namespace, names in spaces.items():
                values = _values(list(names.values()))
                yield tenant, namespace, dict(zip(names, values, strict=True))

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
        the first `limit` of them, with their states, found in each shard's names in sorted
        order (name_order.py), not by a pass over the namespace."""
        held = self._shards
        spaces = {
            shard: names
            for shard in shards
            if (names := held.get(shard, {}).get(tenant, {}).get(namespace)) is not None
        }
        if self._name_order is None:
            self._name_order = NameOrder()
        chosen = self._name_order.page(tenant, namespace, spaces, prefix, after, limit)
        state = self._state
        return [(name, state(spaces[shard][name])) for name, shard in chosen]

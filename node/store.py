"""The node's in-memory replica: one PN-counter per key, indexed by shard.

Every change goes through `increment` or `merge`, so the per-shard digest used by
anti-entropy is recomputed lazily, only for shards that changed since it was last asked for.
The durable stores (Redis, PostgreSQL) arrive behind this same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from crdt import PNCounter
from crdt.codec import encode
from ring import hash64

Key = tuple[str, str, str]


class CounterStore:
    def __init__(self, shard_of: Callable[[Key], int]) -> None:
        self._shard_of = shard_of
        self._states: dict[Key, PNCounter] = {}
        self._shard_keys: dict[int, set[Key]] = {}
        self._digests: dict[int, int] = {}
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: Key) -> PNCounter | None:
        return self._states.get(key)

    def increment(self, key: Key, actor: str, delta: int) -> tuple[PNCounter, PNCounter]:
        """Apply delta under actor; return the new state and the changed slot (the delta)."""
        old = self._states.get(key)
        if old is None:
            old = PNCounter.empty()
        new = old.increment(actor, delta)  # raises before anything is stored
        self._put(key, new)
        return new, new.delta_since(old)

    def merge(self, key: Key, incoming: PNCounter) -> PNCounter:
        old = self._states.get(key)
        if old is None:
            if incoming.is_empty():
                return incoming
            self._put(key, incoming)
            return incoming
        merged = old.merge(incoming)
        if merged is not old and merged != old:
            self._put(key, merged)
        return merged

    def merge_many(self, entries: Iterable[tuple[Key, PNCounter]]) -> None:
        for key, state in entries:
            self.merge(key, state)

    def _put(self, key: Key, state: PNCounter) -> None:
        shard = self._shard_of(key)
        if key not in self._states:
            self._shard_keys.setdefault(shard, set()).add(key)
        self._states[key] = state
        self._dirty.add(shard)

    def shard_entries(self, shard: int) -> list[tuple[Key, PNCounter]]:
        return [(key, self._states[key]) for key in self._shard_keys.get(shard, ())]

    def shards(self) -> Iterator[int]:
        return iter(self._shard_keys)

    def digest(self, shard: int) -> int:
        """Order-independent hash of a shard's keys and states (0 when empty)."""
        if shard in self._dirty or shard not in self._digests:
            value = 0
            for key in self._shard_keys.get(shard, ()):
                value ^= hash64("/".join(key).encode() + b"\0" + encode(self._states[key]))
            self._digests[shard] = value
            self._dirty.discard(shard)
        return self._digests[shard]

    def drop_shard(self, shard: int) -> int:
        """Forget a shard this node no longer replicates; returns how many keys went."""
        keys = self._shard_keys.pop(shard, set())
        for key in keys:
            del self._states[key]
        self._digests.pop(shard, None)
        self._dirty.discard(shard)
        return len(keys)

    def scan(
        self, tenant: str, namespace: str, prefix: str, after: str, limit: int, shards: set[int]
    ) -> list[tuple[str, PNCounter]]:
        """Names in (tenant, namespace) starting with prefix, sorted, greater than `after`."""
        found = [
            (key[2], self._states[key])
            for shard in shards
            for key in self._shard_keys.get(shard, ())
            if key[0] == tenant
            and key[1] == namespace
            and key[2].startswith(prefix)
            and key[2] > after
        ]
        found.sort(key=lambda item: item[0])
        return found[:limit]

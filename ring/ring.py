"""The ring: an immutable snapshot of where every shard lives.

The key space is cut into Q equal shards (a power of two); a counter lives in shard
key_hash(tenant, namespace, name) mod Q. The ring's table gives each shard its preference list:
min(N, M) distinct node ids out of the M members, position 0 being the coordinator.

The table is part of the gossiped ring state, not recomputed from the member set: a fixed
function of the members cannot both balance 256 shards within 25% and move only the joining or
leaving node's replicas. `with_node` and `without_node` derive the next table from the
previous one by the deterministic steps in `ring.claim`, so every node holding the same ring
computes the same placement, and `epoch` counts the steps. `checksum()` covers Q, N and the
table (not the epoch), so gossip spots diverging views with one string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ring import claim
from ring.hashing import key_hash

__all__ = ["DEFAULT_REPLICAS", "DEFAULT_SHARDS", "MAX_SHARDS", "Ring", "RingError"]

DEFAULT_SHARDS = 256
DEFAULT_REPLICAS = 3
MAX_SHARDS = 65536


class RingError(ValueError):
    """A ring, a ring change or a ring on the wire is not valid."""


def _check_int(value: object, what: str, low: int, high: int | None = None) -> int:
    # bool is an int subclass, but True as a shard count is a caller's bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RingError(f"{what} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise RingError(f"{what} must be {bound}, got {value}")
    return value


def _check_node(node: object) -> str:
    if not isinstance(node, str) or not node:
        raise RingError(f"a node id must be a non-empty str, got {node!r}")
    return node


def _check_table(table: object, shards: int, replicas: int) -> dict[str, frozenset[int]]:
    """Validate the table's shape; return each node's shards."""
    if not isinstance(table, tuple) or len(table) != shards:
        raise RingError(f"the table must be a tuple of {shards} preference lists")
    held: dict[str, list[int]] = {}
    for shard, entry in enumerate(table):
        if not isinstance(entry, tuple):
            raise RingError(f"shard {shard}: a preference list must be a tuple")
        for node in entry:
            held.setdefault(_check_node(node), []).append(shard)
        if len(set(entry)) != len(entry):
            raise RingError(f"shard {shard}: duplicate node in {entry!r}")
    size = min(replicas, len(held))
    for shard, entry in enumerate(table):
        if len(entry) != size:
            raise RingError(f"shard {shard}: {len(entry)} nodes, expected {size}")
    return {node: frozenset(shards_held) for node, shards_held in sorted(held.items())}


@dataclass(frozen=True, slots=True, repr=False)
class Ring:
    """Q shards, replication factor N, version `epoch`, and each shard's preference list."""

    shards: int
    replicas: int
    epoch: int
    table: tuple[tuple[str, ...], ...]
    # Derived once here so per-request and per-gossip calls cost no scan of the table.
    _held: Mapping[str, frozenset[int]] = field(init=False, compare=False, repr=False)
    _checksum: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        shards = _check_int(self.shards, "shards", 1, MAX_SHARDS)
        if shards & (shards - 1):
            raise RingError(f"shards must be a power of two, got {shards}")
        replicas = _check_int(self.replicas, "replicas", 1)
        _check_int(self.epoch, "epoch", 0)
        object.__setattr__(self, "_held", _check_table(self.table, shards, replicas))
        canonical = json.dumps([shards, replicas, self.table], separators=(",", ":"))
        digest = hashlib.blake2b(canonical.encode("ascii"), digest_size=16).hexdigest()
        object.__setattr__(self, "_checksum", digest)

    def __repr__(self) -> str:
        # The table is thousands of names; the checksum identifies it.
        return (
            f"Ring(shards={self.shards}, replicas={self.replicas}, epoch={self.epoch}, "
            f"nodes={self.nodes!r}, checksum={self._checksum!r})"
        )

    @classmethod
    def build(
        cls,
        nodes: Iterable[str],
        shards: int = DEFAULT_SHARDS,
        replicas: int = DEFAULT_REPLICAS,
    ) -> Ring:
        """The ring reached by adding `nodes` one by one in sorted order, at epoch 0."""
        ids = [_check_node(node) for node in nodes]
        ring = cls(shards, replicas, 0, ((),) * _check_int(shards, "shards", 1, MAX_SHARDS))
        for node in sorted(ids):
            ring = ring.with_node(node)
        return cls(ring.shards, ring.replicas, 0, ring.table)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node id in the table, sorted."""
        return tuple(self._held)

    def with_node(self, node: str) -> Ring:
        """The next ring, with `node` holding its fair share taken from the busiest nodes."""
        if _check_node(node) in self._held:
            raise RingError(f"node {node!r} is already in the ring")
        count = len(self._held) + 1
        if count > self.replicas and self.shards * self.replicas < count:
            # It would get no replica, so it would not even appear in the table.
            raise RingError(f"{count} nodes cannot share {self.shards} shards x {self.replicas}")
        table = claim.join(self.table, node, self.replicas)
        return Ring(self.shards, self.replicas, self.epoch + 1, table)

    def without_node(self, node: str) -> Ring:
        """The next ring, with `node`'s replicas handed to the least loaded other nodes."""
        if _check_node(node) not in self._held:
            raise RingError(f"node {node!r} is not in the ring")
        table = claim.leave(self.table, node, self.replicas)
        return Ring(self.shards, self.replicas, self.epoch + 1, table)

    def shard_of(self, tenant: str, namespace: str, name: str) -> int:
        """The shard of counter (tenant, namespace, name)."""
        return key_hash(tenant, namespace, name) & (self.shards - 1)

    def preference_list(self, shard: int, n: int | None = None) -> tuple[str, ...]:
        """The shard's first `n` nodes (all when None), coordinator first."""
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < self.shards:
            raise RingError(f"shard must be in 0..{self.shards - 1}, got {shard!r}")
        entry = self.table[shard]
        if n is None:
            return entry
        return entry[: _check_int(n, "n", 0)]

    def shards_of(self, node: str) -> frozenset[int]:
        """The shards `node` holds a replica of (empty for an unknown node)."""
        return self._held.get(node, frozenset())

    def load(self) -> dict[str, int]:
        """Replicas held per node."""
        return {node: len(held) for node, held in self._held.items()}

    def coordinators(self) -> dict[str, int]:
        """Shards led (position 0) per node; 0 for a node that leads none."""
        counts = dict.fromkeys(self._held, 0)
        for entry in self.table:
            if entry:
                counts[entry[0]] += 1
        return counts

    def checksum(self) -> str:
        """Hex BLAKE2b-128 of (shards, replicas, table); equal placements, equal checksums."""
        return self._checksum

    def to_wire(self) -> dict[str, object]:
        """Plain types for msgpack or JSON; `from_wire` reverses it."""
        return {
            "q": self.shards,
            "n": self.replicas,
            "epoch": self.epoch,
            "table": [list(entry) for entry in self.table],
        }

    @classmethod
    def from_wire(cls, obj: object) -> Ring:
        """The ring `to_wire` produced; RingError (never KeyError or TypeError) on bad input."""
        if not isinstance(obj, dict):
            raise RingError(f"a wire ring must be a mapping, not {type(obj).__name__}")
        missing = {"q", "n", "epoch", "table"} - obj.keys()
        if missing:
            raise RingError(f"a wire ring lacks {sorted(missing)}")
        table = obj["table"]
        if not isinstance(table, list | tuple) or not all(
            isinstance(entry, list | tuple) for entry in table
        ):
            raise RingError("the wire table must be a list of lists")
        # The constructor checks ints, ids, sizes and duplicates.
        return cls(obj["q"], obj["n"], obj["epoch"], tuple(tuple(entry) for entry in table))

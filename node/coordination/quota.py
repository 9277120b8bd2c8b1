"""Per-tenant quota on live counters: creating a counter past it answers 403, nothing applied.

Each node counts, per tenant, the counters of the shards it coordinates (it is their first
replica) and gossips those counts; a tenant's cluster total is this node's count plus the
last count each other ring member reported, plus the hinted counters it holds. The check runs
on the coordinator, only when an increment would create a counter, so existing counters never
stop counting. Counts travel by gossip, so counters created on different nodes within one
gossip interval may pass the quota together: it is a soft limit, off by at most what a
tenant creates in that time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from node.base.config import Config
from node.base.errors import ClientError
from node.base.keys import Key
from node.cluster.membership import Cluster
from node.storage.store import CounterStore

log = logging.getLogger("counters.quota")
# Tenants one gossip message reports, nearest their quota first: enough for any tenant that
# could reach one, and a bound on the message whatever the number of tenants.
MAX_REPORTED_TENANTS = 10_000


class QuotaExceeded(ClientError):
    status = 403
    type = "quota-exceeded"
    title = "Tenant has reached its quota of counters"


class CounterQuota:
    def __init__(self, config: Config, cluster: Cluster, store: CounterStore) -> None:
        self.limit = config.max_counters_per_tenant
        self.overrides = config.counter_quota_table()
        self.cluster = cluster
        self.store = store
        self._reports: dict[str, dict[str, int]] = {}  # per peer: its counts per tenant
        self._own: tuple[float, dict[str, int]] = (0.0, {})  # (when counted, counts)
        self._coordinated_in: tuple[object, list[int]] = (None, [])  # (ring, its shards)
        self._reports_heard = 0  # reports kept so far: a new one may raise any total
        # per tenant: (total when counted, store size then, what the count rests on)
        self._counted: dict[str, tuple[int, int, tuple[object, int, int]]] = {}

    def limit_of(self, tenant: str) -> int:
        """The tenant's quota; 0 means none."""
        return self.overrides.get(tenant, self.limit)

    def _coordinated(self) -> list[int]:
        ring, me = self.cluster.state.current, self.cluster.node_id
        if self._coordinated_in[0] is not ring:
            shards = [s for s in ring.shards_of(me) if ring.preference_list(s)[:1] == (me,)]
            self._coordinated_in = (ring, shards)
        return self._coordinated_in[1]

    def own_counts(self, max_age_s: float = 0.0) -> dict[str, int]:
        """Counters per tenant in the shards this node coordinates, for the tenants that
        have a quota, at most MAX_REPORTED_TENANTS of them, nearest their quota first
        (what it gossips)."""
        now = time.monotonic()
        if max_age_s and now - self._own[0] < max_age_s:
            return self._own[1]
        counts: dict[str, int] = {}
        for shard in self._coordinated():
            for tenant, count in self.store.tenant_counts(shard).items():
                counts[tenant] = counts.get(tenant, 0) + count
        limited = {t: c for t, c in counts.items() if self.limit_of(t)}
        if len(limited) > MAX_REPORTED_TENANTS:
            nearest = sorted(limited, key=lambda t: limited[t] / self.limit_of(t), reverse=True)
            limited = {t: limited[t] for t in nearest[:MAX_REPORTED_TENANTS]}
        self._own = (now, limited)
        return limited

    def heard(self, peer: str, raw: Any) -> None:
        """A peer's gossiped counts, checked whole before any is kept. A bad report is
        dropped with a warning, not held against the rest of the peer's gossip."""
        if raw is None:
            return
        if (
            not isinstance(raw, dict)
            or len(raw) > MAX_REPORTED_TENANTS
            or not all(isinstance(t, str) and type(c) is int and c >= 0 for t, c in raw.items())
        ):
            log.warning("dropped the tenant counts %s gossiped: not a map of counts", peer)
            return
        self._reports[peer] = raw
        self._reports_heard += 1

    def total(self, tenant: str) -> int:
        """The tenant's counters in the cluster, as far as gossip has told, and those this
        node holds in shards it does not replicate (hints, node/coordination/hints.py: no
        coordinator counts them before they are handed over)."""
        ring, me = self.cluster.state.current, self.cluster.node_id
        members = set(ring.nodes) - {me}
        others = sum(self._reports.get(peer, {}).get(tenant, 0) for peer in members)
        mine = ring.shards_of(me)
        counted = [*self._coordinated(), *(s for s in self.store.shard_numbers() if s not in mine)]
        return others + sum(self.store.tenant_counts(s).get(tenant, 0) for s in counted)

    def admit(self, key: Key, shard: int = -1) -> None:
        """Refuse an increment that would create a counter past its tenant's quota (a zero
        delta creates one too); existing counters always pass. `shard`: key's, if the
        caller has it (-1: the store hashes the key)."""
        if not self.store.has(key, shard):
            self.admit_new(key[0])

    def admit_new(self, tenant: str) -> None:
        """Raise QuotaExceeded if the tenant may not create one more counter.

        `total` sums every coordinated shard (256 lookups), which made creating a counter
        cost four times an increment. Since the tenant was last counted, its total grew by
        at most the counters the store gained, as long as no shard was dropped, the ring
        is the same and no report came: while that bound stays under the limit, the
        answer is known without counting again. Refusals are exactly as before."""
        limit = self.limit_of(tenant)
        if not limit:
            return
        basis = (self.cluster.state.current, self.store.shards_dropped, self._reports_heard)
        size = len(self.store)
        counted = self._counted.get(tenant)
        if counted is not None and counted[2] == basis and counted[0] + size - counted[1] < limit:
            return
        total = self.total(tenant)
        self._counted[tenant] = (total, size, basis)
        if total >= limit:
            raise QuotaExceeded(
                f"tenant {tenant!r} holds its quota of {limit} counters; "
                "increment an existing counter or ask for a larger quota",
                limit=limit,
            )

"""Before a request is routed: peers that recovered but are not yet serving in this node's
view are asked for their state, when a shard the request must read lacks serving replicas.

A peer turns itself up when it has recovered, and the others hear so a gossip round later;
a request must not be refused for that lag (node/cluster/readiness.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from node.cluster.membership import Cluster
from node.coordination.ops import Op, OpKind
from node.coordination.replication import needed

ViewRefresh = Callable[[Collection[str]], Awaitable[None]]  # asks peers for their view now


class ViewCatchUp:
    def __init__(self, cluster: Cluster, refresh_view: ViewRefresh | None) -> None:
        self.cluster = cluster
        self.refresh_view = refresh_view  # Gossip.refresh: ask peers for their state now
        # (view, down set) -> peers alive but not serving in it: both are replaced, never
        # changed in place, so the set is recomputed only when the view changes.
        self._lagging: tuple[object, object, frozenset[str]] = (None, None, frozenset())

    async def before_routing(self, ops: list[Op], shards: list[int], consistency: str) -> None:
        """When a shard these ops must read (a read, a reset, a keyed op) has too few
        serving replicas in this node's view while others are alive but not yet serving in
        it, ask those for their state now."""
        cluster = self.cluster
        if self.refresh_view is None:
            return
        lagging = self._lagging_peers()
        if not lagging:
            return  # the common case: two identity checks per request
        ask: set[str] = set()
        checked: set[int] = set()
        for op, shard in zip(ops, shards, strict=True):
            if (op.kind is OpKind.INCREMENT and not op.idem) or shard in checked:
                continue  # a plain increment needs live replicas, not serving ones
            checked.add(shard)
            replicas = cluster.replicas(shard)
            behind = [n for n in replicas if n in lagging]
            serving = sum(1 for n in replicas if cluster.serving(n))
            if behind and serving < needed(consistency, cluster.config.read_quorum, len(replicas)):
                ask.update(behind)
        if ask:
            await self.refresh_view(ask)

    def _lagging_peers(self) -> frozenset[str]:
        cluster = self.cluster
        view, down, lagging = self._lagging
        if view is not cluster.view or down is not cluster.down:
            lagging = frozenset(
                m.node_id
                for m in cluster.peers()
                if cluster.alive(m.node_id) and not cluster.serving(m.node_id)
            )
            self._lagging = (cluster.view, cluster.down, lagging)
        return lagging

"""Listing a namespace: one serving replica per shard, the other nodes asked at once.

Each node answers from its store's index of the namespace (CounterStore.scan); the page is
the first `limit` names after the cursor across all of them.
"""

from __future__ import annotations

import asyncio

from node.base.errors import QuorumUnavailable
from node.cluster.wire import FORWARD
from node.coordination.coordinator import Coordinator
from node.storage.store import CounterStore


async def scan(
    co: Coordinator, tenant: str, namespace: str, prefix: str, after: str, limit: int
) -> list[tuple[str, int]]:
    """Counters of a namespace in name order: (name, value), at most `limit`."""
    me = co.cluster.node_id
    by_node: dict[str, set[int]] = {}
    for shard in range(co.cluster.state.current.shards):
        owner = co.owner(shard)
        if owner is None:
            raise QuorumUnavailable(f"no live replica serves shard {shard}")
        by_node.setdefault(owner, set()).add(shard)
    found = local_rows(co.store, tenant, namespace, prefix, after, limit, by_node.get(me, set()))
    links = [
        (co.link_to(node_id), sorted(shards))
        for node_id, shards in by_node.items()
        if node_id != me
    ]
    # The other nodes all at once: a page waits for the slowest, not for their sum.
    replies = await asyncio.gather(
        *(
            link.call(
                FORWARD, {"scan": [tenant, namespace, prefix, after, limit, shards]}, co.timeout
            )
            for link, shards in links
        ),
        return_exceptions=True,
    )
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
        found += [(str(name), int(value)) for name, value in reply]
    found.sort()
    return found[:limit]


def local_rows(
    store: CounterStore,
    tenant: str,
    namespace: str,
    prefix: str,
    after: str,
    limit: int,
    shards: set[int],
) -> list[tuple[str, int]]:
    """This node's part of a page: (name, value) from the given shards."""
    if not shards:
        return []
    rows = store.scan(tenant, namespace, prefix, after, limit, shards)
    # saturated like every value a node emits (crdt/pncounter.py), so a row always packs
    return [(name, state.saturated_value()[0]) for name, state in rows]

"""Listing a namespace at a consistency level: per shard, as many serving replicas as a read
of one of its counters asks (one, a read quorum, or all), the other nodes asked at once.

Each node answers from its store's index of the namespace (CounterStore.scan) for the shards
it is asked, which it must replicate in its current ring and serve (else it refuses, and the
page answers 503: a node with a stale ring must not make a short page of a 200). Above `one`
every asked replica sends each counter's state, and the page merges them: a counter
acknowledged at a write quorum is on every page that reaches it, at a value that holds every
write acknowledged before the page (R + W > N), as a quorum read of it would answer. The page
is the first `limit` names after the cursor across all of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crdt import PNCounter
from node.base.errors import QuorumUnavailable
from node.cluster.wire import FORWARD, state_from_wire
from node.coordination.coordinator import Coordinator
from node.coordination.replication import needed
from node.storage.store import CounterStore

STATES = "scan-states"  # wire.FEATURES: a scan that answers states, so replicas merge


async def scan(
    co: Coordinator,
    tenant: str,
    namespace: str,
    prefix: str,
    after: str,
    limit: int,
    consistency: str,
) -> list[tuple[str, int]]:
    """Counters of a namespace in name order: (name, value), at most `limit`. Above `one`,
    a replica that fails is replaced by a spare (another serving replica) once, as a read's."""
    cluster, me = co.cluster, co.cluster.node_id
    states = consistency != "one"
    candidates = {s: _serving(co, s, consistency) for s in range(cluster.state.current.shards)}
    asked = {s: found[: _wanted(co, s, consistency)] for s, found in candidates.items()}
    by_node: dict[str, set[int]] = {}
    for shard, nodes in asked.items():
        for node_id in nodes:
            by_node.setdefault(node_id, set()).add(shard)
    rows = scan_here(co.store, tenant, namespace, prefix, after, limit, by_node.pop(me, set()))
    merged = dict(rows)
    values: dict[str, int] = {}
    for spare_round in (False, True):
        replies = await _ask(co, by_node, [tenant, namespace, prefix, after, limit], states)
        for reply in replies.values():
            if isinstance(reply, BaseException):
                continue
            for row in reply:
                if not states:
                    values[str(row[0])] = int(row[1])
                    continue
                name, state = str(row[0]), state_from_wire(row[2])
                found = merged.get(name)
                merged[name] = state if found is None else found.merge(state)
        errors = {n: r for n, r in replies.items() if isinstance(r, BaseException)}
        if not errors:
            break
        node_id, error = next(iter(errors.items()))
        if spare_round or not states:
            raise QuorumUnavailable(f"listing: {node_id} did not answer ({error}); retry")
        by_node = {}
        for failed_node in errors:
            for shard in (s for s, nodes in asked.items() if failed_node in nodes):
                fresh = (n for n in candidates[shard] if n not in asked[shard] and n not in errors)
                spare = next(fresh, None)
                if spare is None or spare == me:
                    raise QuorumUnavailable(f"listing: {failed_node} did not answer; retry")
                asked[shard].append(spare)
                by_node.setdefault(spare, set()).add(shard)
    values.update((name, state.saturated_value()[0]) for name, state in merged.items())
    return sorted(values.items())[:limit]


async def _ask(
    co: Coordinator, by_node: dict[str, set[int]], body: list[object], states: bool
) -> dict[str, Any]:
    """Each node's reply to its part of a scan (or the error), all asked at once: a page
    waits for the slowest, not for their sum."""
    if states and (old := [n for n in by_node if not co.cluster.supports(n, STATES)]):
        raise QuorumUnavailable(
            f"{', '.join(old)} run an earlier version that cannot answer a listing above "
            "consistency one; ask at one, or after the upgrade"
        )
    nodes = list(by_node)
    replies = await asyncio.gather(
        *(
            co.link_to(node_id).call(
                FORWARD,
                {"scan": [*body, sorted(by_node[node_id]), *([True] if states else [])]},
                co.timeout,
            )
            for node_id in nodes
        ),
        return_exceptions=True,
    )
    return dict(zip(nodes, replies, strict=True))


def _wanted(co: Coordinator, shard: int, consistency: str) -> int:
    return needed(consistency, co.cluster.config.read_quorum, len(co.cluster.replicas(shard)))


def _serving(co: Coordinator, shard: int, consistency: str) -> list[str]:
    """The serving replicas of the shard a listing may ask, in the order it asks them: at
    `one` the one an operation on it runs on, else this node first if it serves, then those
    our links reach."""
    cluster = co.cluster
    if consistency == "one":
        owner = co.owner(shard)
        if owner is None:
            raise QuorumUnavailable(f"no live replica serves shard {shard}")
        return [owner]
    serving = [n for n in cluster.replicas(shard) if cluster.serving(n)]
    serving.sort(key=lambda n: (n != cluster.node_id, not co.replicator.reachable(n)))
    wanted = _wanted(co, shard, consistency)
    if len(serving) < wanted:
        raise QuorumUnavailable(
            f"{len(serving)} of shard {shard}'s replicas serve, {wanted} needed at {consistency}"
        )
    return serving


def scan_here(
    store: CounterStore,
    tenant: str,
    namespace: str,
    prefix: str,
    after: str,
    limit: int,
    shards: set[int],
) -> list[tuple[str, PNCounter]]:
    """This node's part of a page: (name, state) from the given shards."""
    return store.scan(tenant, namespace, prefix, after, limit, shards) if shards else []

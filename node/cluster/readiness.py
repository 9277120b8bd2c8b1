"""Readiness: what a 200 from /readyz promises, and the rule that decides it.

The promise: this node can take any request at the default consistency (quorum) on any key,
and answer it from caught-up state. A load balancer that sends a keyed increment, a batch
or a reset to a node the moment it says ready must not get a 503 for a quorum it was told
exists. So a node is ready when, in its own view:

1. it is in the ring, has recovered its shards (durable replica and peers), has proven its
   incarnation new (node/cluster/identity.py), and its own status is up or leaving: its
   state counts toward quorums (`Cluster.ready`);
2. every shard has at least R replicas that serve (up or leaving, not down; this node
   counts when 1. holds) and at least W that are alive. Keyed ops and resets read R serving
   replicas before they write, plain reads read R, plain writes need W alive; a shard this
   node does not hold is forwarded to its first serving replica, which needs the same.

The view is the point. Each node turns itself up when its own recovery ends, and the others
learn so by gossip, a round or more later. Rule 1 alone let a node say ready while its view
still showed every peer joining: it served plain writes (W counts alive nodes) but refused
every read-before-write for seconds. Rule 2 waits for the view to show the quorum. The
other side of the lag, a peer whose view still shows *this* node joining when a request is
forwarded to it, is healed where it bites: a coordinator short of serving replicas asks the
laggards for their state at once (Gossip.refresh) instead of waiting for the next round.

Not in the rule: the durable replica's health. In async mode a node serves from memory and
catches the store up later; /readyz reports the store's state apart (node/http/health.py).
A cluster that has lost a quorum of some shard is rightly not ready: requests at the
default consistency on those keys would fail. consistency=one still works on such a node.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from node.cluster.membership import Cluster


def quorum_gaps(
    preference_lists: Sequence[Sequence[str]],
    serving: Collection[str],
    alive: Collection[str],
    read_quorum: int,
    write_quorum: int,
) -> list[int]:
    """Shards (indexes into preference_lists) with fewer than R serving or W alive replicas;
    a list shorter than a quorum needs all of its replicas, as the request paths do."""
    gaps = []
    for shard, replicas in enumerate(preference_lists):
        if not replicas:
            gaps.append(shard)
            continue
        serving_count = sum(1 for n in replicas if n in serving)
        alive_count = sum(1 for n in replicas if n in alive)
        if serving_count < min(read_quorum, len(replicas)) or alive_count < min(
            write_quorum, len(replicas)
        ):
            gaps.append(shard)
    return gaps


def reasons(cluster: Cluster) -> list[str]:
    """Why this node is not ready; empty when it is."""
    found = []
    me = cluster.view.get(cluster.node_id)
    if cluster.node_id not in cluster.state.nodes():
        found.append("joining: not yet in the ring")
    if not cluster.recovered:
        found.append("recovering: loading shard state from the durable replica and peers")
    elif not cluster.proven:
        found.append(f"identity: {cluster.identity_reason or 'proving its incarnation new'}")
    if me is None or me.status.value not in ("up", "leaving"):
        found.append(f"status is {me.status.value if me else 'unknown'}")
    if found:
        return found
    quorum = _quorum_reason(cluster)
    return [quorum] if quorum else []


def _quorum_reason(cluster: Cluster) -> str:
    ring = cluster.state.current
    members = set(ring.nodes) | {cluster.node_id}
    serving = {n for n in members if cluster.serving(n)}
    alive = {n for n in members if cluster.alive(n)}
    config = cluster.config
    gaps = quorum_gaps(ring.table, serving, alive, config.read_quorum, config.write_quorum)
    if not gaps:
        return ""
    return (
        f"quorum: {len(gaps)} of {ring.shards} shards have fewer than "
        f"{config.read_quorum} serving replicas in this node's view "
        f"({_describe(cluster, sorted(members - serving))})"
    )


def _describe(cluster: Cluster, nodes: list[str]) -> str:
    parts = []
    for node_id in nodes:
        member = cluster.view.get(node_id)
        status = "down" if node_id in cluster.down else member.status.value if member else "unknown"
        parts.append(f"{node_id} {status}")
    return ", ".join(parts) or "none"

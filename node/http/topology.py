"""`GET /v1/topology`: where each shard lives, for clients that route by themselves.

A client that hashes `tenant/namespace/name` as the node does (ring/hashing.py: BLAKE2b-64 of
the UTF-8 key, masked by the shard count) sends each op straight to its shard's coordinator,
the first serving replica of the preference list, instead of to a node that forwards two
requests in three. The answer carries the caller's tenant (the one its token names) so a
client need not decode its token. Every answer of the node carries the current ring epoch
in the `Counters-Ring-Epoch` header (node/http/middleware.py): a client whose map is older
fetches this again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.cluster.membership import Cluster
from node.http import auth, bodies
from node.http.appkeys import CLUSTER
from ring import Status

routes = web.RouteTableDef()

EPOCH_HEADER = "Counters-Ring-Epoch"


def topology(cluster: Cluster, tenant: str) -> dict[str, Any]:
    """The current ring as a client needs it: shard count, each shard's replicas (ids, in
    preference order), and each node's address and status as this node sees them."""
    ring = cluster.state.current
    members = {n for n, m in cluster.view.members.items() if m.status != Status.REMOVED}
    nodes: dict[str, Any] = {}
    for node_id in sorted(members | set(ring.nodes)):
        address = cluster.address_of(node_id)
        nodes[node_id] = {"address": address, "status": cluster.status_of(node_id)}
    return {
        "epoch": ring.epoch,
        "checksum": ring.checksum(),
        "shards": ring.shards,
        "replicas": ring.replicas,
        "tenant": tenant,
        "hash": "blake2b-64(tenant/namespace/name) & (shards - 1)",
        "nodes": nodes,
        "preference_lists": [list(entry) for entry in ring.table],
    }


@routes.get("/v1/topology")
async def get_topology(request: web.Request) -> web.Response:
    found: auth.Principal = request[auth.PRINCIPAL]
    found.require(auth.READ)
    return bodies.json_response(topology(request.app[CLUSTER], found.tenant))

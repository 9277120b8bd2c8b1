"""Ring administration: look at the ring, add nodes, let them leave, remove dead ones.

Changes are membership events; the claimant turns them into a pending ring, the receiving
nodes pull their shards, and then the ring switches (see ring/claimant.py). The claimant
moves one node at a time, so a change made while a hand-off runs is accepted and queued:
the answer says so, and what it waits for.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.base.config import ConfigError, parse_address
from node.base.errors import Conflict, InvalidBody, NotFound, PeerError, QuorumUnavailable
from node.cluster import wire
from node.cluster.membership import Cluster
from node.http import bodies, validation
from node.http.appkeys import CLUSTER, GOSSIP, HANDOFF, PERSISTER, POOL
from ring import Status, TransitionError
from ring.claimant import queued

routes = web.RouteTableDef()


def _members(cluster: Cluster) -> list[dict[str, Any]]:
    load = cluster.state.current.load()
    return [
        {
            "node_id": node_id,
            "address": member.address,
            "status": cluster.status_of(node_id),
            "version": member.version,
            "shards": load.get(node_id, 0),
        }
        for node_id, member in sorted(cluster.view.members.items())
    ]


def _change_answer(request: web.Request, node_id: str, status: str) -> dict[str, Any]:
    """The answer to a membership change: the member's status, and whether the change waits
    behind a hand-off in progress (membership changes are made one node at a time)."""
    cluster = request.app[CLUSTER]
    answer: dict[str, Any] = {
        "node_id": node_id,
        "status": status,
        "queued": None,
    }
    pending = cluster.state.pending
    if pending is not None and queued(cluster.state, cluster.view):
        left = len(request.app[HANDOFF].pending_moves())
        answer["queued"] = (
            f"accepted, queued: the hand-off to ring epoch {pending.epoch} "
            f"({left} shard moves not yet confirmed) finishes first; membership changes "
            "are made one node at a time"
        )
    return answer


@routes.get("/admin/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    return bodies.json_response({"nodes": _members(request.app[CLUSTER])})


@routes.get("/admin/ring")
async def show_ring(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    current, pending = cluster.state.current, cluster.state.pending
    body: dict[str, Any] = {
        "node": cluster.node_id,
        "epoch": current.epoch,
        "checksum": current.checksum(),
        "shards": current.shards,
        "replicas": current.replicas,
        "members": _members(cluster),
        "shards_per_node": current.load(),
        "coordinators_per_node": current.coordinators(),
        "preference_lists": [list(entry) for entry in current.table],
        "pending": None,
        "refused_peers": dict(cluster.refused),
        # replicas that were down when this node pulled shards from the others: it may lack
        # writes only they hold, and pulls them when they are back
        "missed_pulls": {n: sorted(s) for n, s in request.app[HANDOFF].missed.items()},
        "persistence": request.app[PERSISTER].status(),
    }
    if pending is not None:
        moves = request.app[HANDOFF].pending_moves()
        body["pending"] = {
            "epoch": pending.epoch,
            "checksum": pending.checksum(),
            "shards_per_node": pending.load(),
            "handoffs": [
                {"shard": shard, "from": source, "to": target} for shard, source, target in moves
            ],
        }
    return bodies.json_response(body)


@routes.post("/admin/nodes")
async def add_node(request: web.Request) -> web.Response:
    """Admit a running node that holds nothing yet, found at `address`."""
    body = await validation.json_object(request, empty_ok=False)
    validation.only_fields(body, {"address"})
    address = body.get("address")
    if not isinstance(address, str):
        raise InvalidBody("address must be a HOST:PORT string")
    try:
        host, port = parse_address(address)
    except ConfigError as error:
        raise InvalidBody(str(error)) from None
    address = f"{host}:{port}"  # as dialled and answered: without the spaces around it
    cluster, gossip = request.app[CLUSTER], request.app[GOSSIP]
    message = gossip.message(None)
    message["admit"] = True
    try:
        reply = (
            await request.app[POOL]
            .link(address)
            .call(wire.GOSSIP, message, cluster.config.request_timeout_s)
        )
    except PeerError as error:
        raise QuorumUnavailable(f"cannot reach {address}: {error}") from None
    if isinstance(reply, dict) and reply.get("refused"):
        raise Conflict(str(reply["refused"]))
    try:
        node_id = gossip.absorb(reply)
    except wire.ProtocolError as error:
        raise QuorumUnavailable(f"{address} answered badly: {error}") from None
    status = cluster.status_of(node_id)
    answer = _change_answer(request, node_id, status)
    return bodies.json_response({**answer, "address": address}, status=202)


@routes.delete("/admin/nodes/{node_id}")
async def remove_node(request: web.Request) -> web.Response:
    """Leave with hand-off, or with ?force=true remove a dead node outright."""
    cluster = request.app[CLUSTER]
    node_id = request.match_info["node_id"]
    force = request.query.get("force", "false").lower()
    if force not in ("true", "false"):
        raise InvalidBody("force must be true or false")
    member = cluster.view.get(node_id)
    if member is None or member.status == Status.REMOVED:
        raise NotFound(f"no member {node_id!r}")
    event = "remove" if force == "true" else "leave"
    staying = [
        other
        for other, m in cluster.view.members.items()
        if other != node_id and m.status == Status.UP and cluster.alive(other)
    ]
    if not staying:
        # Nothing would be left to serve (or receive) its shards: every counter would answer
        # 503 until a node joins, so refuse instead of emptying the ring.
        raise Conflict(f"{node_id} is the last live member; add a node before it goes")
    try:
        cluster.apply(node_id, event)
    except TransitionError as error:
        raise Conflict(f"{node_id} is {member.status.value}: {error}") from None
    status = cluster.view.members[node_id].status.value
    return bodies.json_response(_change_answer(request, node_id, status), status=202)

"""Health: /healthz (the process answers) and /readyz (this node serves requests, or why not)."""

from __future__ import annotations

from aiohttp import web

from node.base.errors import NotReady
from node.http.appkeys import CLUSTER, PERSISTER

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "node": request.app[CLUSTER].node_id})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    cluster, persister = request.app[CLUSTER], request.app[PERSISTER]
    me = cluster.view.get(cluster.node_id)
    reasons = []
    if cluster.node_id not in cluster.state.nodes():
        reasons.append("joining: not yet in the ring")
    if not cluster.recovered:
        reasons.append("recovering: loading shard state from the durable replica and peers")
    elif not cluster.proven:
        reasons.append(f"identity: {cluster.identity_reason or 'proving its incarnation new'}")
    if me is None or me.status.value not in ("up", "leaving"):
        reasons.append(f"status is {me.status.value if me else 'unknown'}")
    if not persister.healthy:
        reasons.append(f"store unreachable: {persister.last_error}")
    if reasons:
        raise NotReady("; ".join(reasons), reasons=reasons, persistence=persister.status())
    return web.json_response(
        {"status": "ready", "node": cluster.node_id, "persistence": persister.status()}
    )

"""Health: /healthz (the process answers) and /readyz (this node serves requests, or why not)."""

from __future__ import annotations

from aiohttp import web

from node.base.errors import NotReady
from node.cluster import readiness
from node.http.appkeys import CLUSTER, PERSISTER

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "node": request.app[CLUSTER].node_id})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    cluster, persister = request.app[CLUSTER], request.app[PERSISTER]
    reasons = readiness.reasons(cluster)  # the rule and what it promises: see that module
    if not persister.healthy:
        reasons.append(f"store unreachable: {persister.last_error}")
    if reasons:
        raise NotReady("; ".join(reasons), reasons=reasons, persistence=persister.status())
    return web.json_response(
        {"status": "ready", "node": cluster.node_id, "persistence": persister.status()}
    )

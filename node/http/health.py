"""Health: /healthz (the process answers) and /readyz (this node serves requests, or why not).

/readyz answers 200 when this node can serve (node/cluster/readiness.py states the rule), and
503 with the reasons when it cannot. What is degraded without stopping it from serving is in
the body of either answer, under "degraded", one line each:

- the durable replica, in async durability: the node serves from memory and catches the
  store up when it returns, so an outage is "durable replica degraded: backlog N, since T",
  not a 503 (a shared Redis's blip must not take every node out of rotation at once). In
  sync durability the node refuses writes while its durable replica is unreachable, so that
  is a reason for 503, which says writes are refused and reads still work; and a node that
  is still recovering needs its durable replica to finish, so there it is a reason too;
- the history store: values wait in a bounded buffer;
- an event sink (node/realtime/sinks.py) that is down: events wait in a bounded backlog;
- a background loop whose turns fail (node/obs/supervision.py): its name, last error, since.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from node.base.errors import NotReady
from node.cluster import readiness
from node.cluster.membership import Cluster
from node.history.recorder import Recorder
from node.http import bodies
from node.http.appkeys import CLUSTER, FEED, HISTORY, PERSISTER, SUPERVISOR
from node.obs.supervision import Supervisor
from node.storage.write_behind import Persister

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return bodies.json_response({"status": "alive", "node": request.app[CLUSTER].node_id})


def _utc(unix_s: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s or 0))


def assess(
    cluster: Cluster, persister: Persister, history: Recorder, supervisor: Supervisor
) -> tuple[list[str], list[str]]:
    """Why this node cannot serve (empty: ready), and what is degraded without stopping it."""
    reasons = readiness.reasons(cluster)  # the rule and what it promises: see that module
    degraded = []
    if not persister.healthy:
        if not cluster.recovered:  # it recovers its shards from the durable replica too
            reasons.append(
                "store unreachable: recovery needs the durable replica "
                f"(since {_utc(persister.unhealthy_since)}: {persister.last_error})"
            )
        elif cluster.config.durability == "sync":
            reasons.append(
                "store unreachable: writes refused, since --durability sync answers a write "
                "only once the durable replica holds it; reads still work "
                f"(since {_utc(persister.unhealthy_since)}: {persister.last_error})"
            )
        else:
            degraded.append(persister.degraded())
    if not history.healthy:
        degraded.append(
            f"history store degraded: {len(history.buffer)} values wait, since "
            f"{_utc(history.unhealthy_since)} ({history.last_error})"
        )
    for loop in supervisor.failing():
        degraded.append(
            f"background loop {loop.name} failing since {_utc(loop.since)}, "
            f"{loop.streak} turns in a row: {loop.last_error}"
        )
    return reasons, degraded


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    cluster, persister, history = app[CLUSTER], app[PERSISTER], app[HISTORY]
    reasons, degraded = assess(cluster, persister, history, app[SUPERVISOR])
    pumps = app[FEED].pumps
    degraded += [pump.degraded() for pump in pumps if not pump.healthy]
    details: dict[str, Any] = {
        "degraded": degraded,
        "event_sinks": [pump.status() for pump in pumps],
        "persistence": persister.status(),
        "history": history.status(),
        "loops": app[SUPERVISOR].status(),
    }
    if reasons:
        raise NotReady("; ".join(reasons), reasons=reasons, **details)
    return bodies.json_response({"status": "ready", "node": cluster.node_id, **details})

"""The client HTTP API (JSON): increments, reads, batches, listings, health.

Handlers only parse and validate; the coordinator does the work. The tenant of every
counter comes from the caller's token (node/auth.py), never from the URL.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web
from msgspec import UNSET

from node.base.errors import InvalidBody, InvalidName
from node.coordination import listing
from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind, OpResult, RemoteError
from node.coordination.replication import needed
from node.http import auth, bodies, realtime_routes, validation
from node.http.appkeys import CLUSTER, CONFIG, COORDINATOR

routes = web.RouteTableDef()
# Name segments match [^/]+ rather than aiohttp's default [^{}/]+, so a name holding { or }
# reaches validation and answers 400 invalid-name, not 404.


def _reply(
    namespace: str,
    name: str,
    result: OpResult,
    consistency: str,
    durability: str = "",
    replicas: int = 0,
) -> web.Response:
    return bodies.json_response(_body(namespace, name, result, consistency, durability, replicas))


def _body(
    namespace: str,
    name: str,
    result: OpResult,
    consistency: str,
    durability: str = "",
    replicas: int = 0,
) -> dict[str, Any]:
    if result.problem is not None:
        raise RemoteError(result.problem)
    body: dict[str, Any] = {"namespace": namespace, "name": name, "value": result.value}
    if result.saturated:  # the exact value lies outside int64; value is the nearest bound
        body["saturated"] = True
    if result.hinted:  # kept by a node cut off from every replica, handed over later
        body["hinted"] = True
    body["consistency"] = consistency
    if durability:
        body["durability"] = durability
    if replicas:  # what the answer promised: replicas (this one included) that held it
        body["replicas"] = replicas
    return body


def _counter(request: web.Request, kind: OpKind) -> tuple[Op, str]:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    name = validation.name(request.match_info["name"])
    consistency = validation.consistency(request)
    scope = auth.READ if kind is OpKind.GET else auth.WRITE
    tenant = auth.principal(request, scope, namespace).tenant
    return Op(kind, (tenant, namespace, name)), consistency


async def _run_one(
    request: web.Request, op: Op, consistency: str, fingerprint: str = ""
) -> web.Response:
    [result] = await request.app[COORDINATOR].run([op], consistency, fingerprint=fingerprint)
    if op.kind is OpKind.GET:
        return _reply(op.key[1], op.key[2], result, consistency)
    config, cluster = request.app[CONFIG], request.app[CLUSTER]
    replicas = len(cluster.replicas(cluster.shard_of(op.key)))
    held = 0 if result.hinted else needed(consistency, config.write_quorum, replicas)
    return _reply(op.key[1], op.key[2], result, consistency, config.durability, held)


@routes.post("/v1/namespaces/{namespace:[^/]+}/counters/{name:[^/]+}/increment")
async def increment(request: web.Request) -> web.Response:
    op, consistency = _counter(request, OpKind.INCREMENT)
    delta = bodies.increment_delta(await request.read())
    idem, fingerprint = validation.idempotency(request, {"delta": delta})
    op = Op(OpKind.INCREMENT, op.key, delta, idem)
    return await _run_one(request, op, consistency, fingerprint)


@routes.delete("/v1/namespaces/{namespace:[^/]+}/counters/{name:[^/]+}")
async def reset_counter(request: web.Request) -> web.Response:
    """Clear what the replicas have observed; increments concurrent with it stay counted."""
    return await _run_one(request, *_counter(request, OpKind.RESET))


@routes.get("/v1/namespaces/{namespace:[^/]+}/counters/{name:[^/]+}")
async def get_counter(request: web.Request) -> web.Response:
    """The value; with ?window=15m also its net change over the window (realtime_routes)."""
    span_min = realtime_routes.span(request)  # a bad span is refused before anything runs
    op, consistency = _counter(request, OpKind.GET)
    if not span_min:
        return await _run_one(request, op, consistency)
    [result] = await request.app[COORDINATOR].run([op], consistency)
    body = _body(op.key[1], op.key[2], result, consistency)
    # the change up to the value read, when that holds every acknowledged write (quorum,
    # all): a value read at one may lag the replica answering the window by any amount
    value = None if result.saturated or consistency == "one" else result.value
    body["window"] = await realtime_routes.window_of(request, op.key, span_min, value)
    return bodies.json_response(body)


def _batch_ops(tenant: str, namespace: str, body: bodies.Batch) -> list[Op]:
    ops = []
    for op in body.ops:
        if isinstance(op, bodies.IncrementOp):
            delta = 1 if op.delta is UNSET else op.delta
            ops.append(Op(OpKind.INCREMENT, (tenant, namespace, op.name), delta))
        else:
            ops.append(Op(OpKind.GET, (tenant, namespace, op.name)))
    return ops


def _batch_results(ops: list[Op], results: list[OpResult]) -> list[dict[str, Any]]:
    """One {"op", "name", "value"} per op; the rare error or flag as OpResult.to_json says."""
    out = []
    for op, result in zip(ops, results, strict=True):
        if result.problem is None and not (result.replayed or result.saturated or result.hinted):
            out.append({"op": op.kind, "name": op.key[2], "value": result.value})
        else:
            out.append({"op": op.kind, "name": op.key[2], **result.to_json()})
    return out


@routes.post("/v1/namespaces/{namespace:[^/]+}/batch")
async def batch(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    consistency = validation.consistency(request)
    body = bodies.batch(await request.read())
    tenant = request[auth.PRINCIPAL].tenant
    ops = _batch_ops(tenant, namespace, body)
    writes = any(op.kind is OpKind.INCREMENT for op in ops)
    principal = auth.principal(request, auth.WRITE if writes else auth.READ, namespace, len(ops))
    coordinator = request.app[COORDINATOR]
    idem, fingerprint = "", ""
    if "Idempotency-Key" in request.headers:
        idem, fingerprint = validation.idempotency(request, bodies.as_json(body))
    if idem:
        # The batch claims its key first, so a different batch under it changes nothing:
        # the claim leads the ops, which run only if it succeeds (Coordinator._run_claimed).
        claim = Op(OpKind.CLAIM, claim_key(principal.tenant, idem), 0, idem)
        ops = [Op(op.kind, op.key, op.delta, f"{idem}#{i}") for i, op in enumerate(ops)]
        claimed, *results = await coordinator.run(
            [claim, *ops], consistency, fingerprint=fingerprint
        )
        if claimed.problem is not None:
            raise RemoteError(claimed.problem)
    else:
        results = await coordinator.run(ops, consistency, fingerprint=fingerprint)
    out = _batch_results(ops, results)
    reply: dict[str, Any] = {"namespace": namespace, "consistency": consistency, "results": out}
    if writes:
        reply["durability"] = request.app[CONFIG].durability
    return bodies.json_response(reply)


def _cursor(raw: str | None) -> str:
    """The name a next_cursor encodes; exactly the text this API wrote (urlsafe base64 of
    the name, padded), anything else 400 (a lenient decode drops stray characters)."""
    if not raw:
        return ""
    try:
        name = base64.b64decode(raw.encode(), altchars=b"-_", validate=True).decode()
        if base64.urlsafe_b64encode(name.encode()).decode() != raw:
            raise ValueError("not as encoded")
        return validation.name(name, "cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidName):
        raise InvalidBody("cursor is not one this API returned") from None


@routes.get("/v1/namespaces/{namespace:[^/]+}/counters")
async def list_counters(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    prefix = request.query.get("prefix", "")
    if prefix:
        validation.prefix(prefix)
    limit = validation.limit(request)
    after = _cursor(request.query.get("cursor"))
    consistency = validation.consistency(request)
    tenant = auth.principal(request, auth.READ, namespace).tenant
    co = request.app[COORDINATOR]
    rows = await listing.scan(co, tenant, namespace, prefix, after, limit, consistency)
    counters = [{"name": name, "value": value} for name, value in rows]
    next_cursor = None
    if len(rows) == limit:
        next_cursor = base64.urlsafe_b64encode(rows[-1][0].encode()).decode()
    return bodies.json_response(
        {"namespace": namespace, "counters": counters, "next_cursor": next_cursor}
    )

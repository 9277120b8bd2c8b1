"""The baseline the benchmark compares Counters with: a thin aiohttp front end over one Redis.

This is what a team would otherwise write: one process (uvloop), the same client routes as a
Counters node, one Redis command per request (INCRBY or GET) and one non-transactional
pipeline per batch. No replication, no quorum: a single Redis is both the speed to beat and
a single point of failure.

    python loadtest/baseline_service.py --listen 127.0.0.1:8000 --redis-url redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import uvloop
from aiohttp import web
from redis.asyncio import Redis

NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,200}")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_BATCH_OPS = 1000
# Pool size caps Redis connections; above the benchmark's concurrency so requests never queue
# for a connection inside this process.
REDIS_MAX_CONNECTIONS = 256
REDIS = web.AppKey("redis", Redis)
REDIS_URL = web.AppKey("redis_url", str)
routes = web.RouteTableDef()


def _bad_request(detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f'{{"detail": "{detail}"}}', content_type="application/json")


def _name(value: Any) -> str:
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        raise _bad_request("name must be 1-200 characters of [A-Za-z0-9._:-]")
    return value


def _delta(value: Any) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise _bad_request("delta must be a signed 64-bit integer")
    return value


def _redis_key(namespace: str, name: str) -> str:
    # "/" cannot appear in a namespace, so namespace and name never run together.
    return f"c:{namespace}/{name}"


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise _bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _reply(namespace: str, name: str, value: int) -> web.Response:
    body = {"namespace": namespace, "name": name, "value": value, "consistency": "single"}
    return web.json_response(body)


@routes.post("/v1/namespaces/{namespace}/counters/{name}/increment")
async def increment(request: web.Request) -> web.Response:
    namespace = _name(request.match_info["namespace"])
    name = _name(request.match_info["name"])
    delta = _delta((await _json_object(request)).get("delta", 1))
    value = await request.app[REDIS].incrby(_redis_key(namespace, name), delta)
    return _reply(namespace, name, int(value))


@routes.get("/v1/namespaces/{namespace}/counters/{name}")
async def get_counter(request: web.Request) -> web.Response:
    namespace = _name(request.match_info["namespace"])
    name = _name(request.match_info["name"])
    value = await request.app[REDIS].get(_redis_key(namespace, name))
    return _reply(namespace, name, int(value or 0))


def _batch_ops(body: dict[str, Any]) -> list[tuple[str, str, int]]:
    raw_ops = body.get("ops")
    if not isinstance(raw_ops, list) or not 1 <= len(raw_ops) <= MAX_BATCH_OPS:
        raise _bad_request(f"ops must be a list of 1 to {MAX_BATCH_OPS} ops")
    ops = []
    for raw in raw_ops:
        if not isinstance(raw, dict) or raw.get("op") not in ("increment", "get"):
            raise _bad_request("each op must be an object with op increment or get")
        delta = _delta(raw.get("delta", 1)) if raw["op"] == "increment" else 0
        ops.append((raw["op"], _name(raw.get("name")), delta))
    return ops


@routes.post("/v1/namespaces/{namespace}/batch")
async def batch(request: web.Request) -> web.Response:
    namespace = _name(request.match_info["namespace"])
    ops = _batch_ops(await _json_object(request))
    # transaction=False: plain pipelining, one round trip, no MULTI/EXEC, as a team would write.
    pipe = request.app[REDIS].pipeline(transaction=False)
    for kind, name, delta in ops:
        key = _redis_key(namespace, name)
        if kind == "increment":
            pipe.incrby(key, delta)
        else:
            pipe.get(key)
    values = await pipe.execute()
    results = [
        {"op": kind, "name": name, "value": int(value or 0)}
        for (kind, name, _), value in zip(ops, values, strict=True)
    ]
    return web.json_response({"namespace": namespace, "results": results})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    await request.app[REDIS].ping()
    return web.json_response({"status": "ready"})


async def _redis_client(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = Redis.from_url(app[REDIS_URL], max_connections=REDIS_MAX_CONNECTIONS)
    yield
    await app[REDIS].aclose()


def build_app(redis_url: str) -> web.Application:
    app = web.Application()
    app[REDIS_URL] = redis_url
    app.cleanup_ctx.append(_redis_client)
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT to serve on")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="Redis to use")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    uvloop.install()
    # No access log, like the nodes: logging every request would be the benchmark's bottleneck.
    web.run_app(build_app(args.redis_url), host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()

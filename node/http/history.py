"""History endpoints: a counter's series, a namespace's rollups, the recorder's status.

Any node answers. With PostgreSQL every node reads the one shared table. With the embedded
SQLite store each node holds only what it recorded itself (the counters of shards it
coordinated), so the answering node asks every live peer for the rows that decide the answer
(`/peer/history`, signed with the cluster secret), merges them with its own in a throwaway
in-memory SQLite store the way the table would have (newest recording wins) and asks that.
Peers it cannot reach are named in `unreachable_nodes`; their history is missing.

Times are ISO 8601 (a missing offset means UTC) or unix seconds. Ranges are [from, to) and
hold the buckets starting in them; steps and periods are UTC minutes, hours and days. Only
steps with a recorded bucket appear: a counter did not change in a step that is absent.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from node.base.errors import InvalidBody, ServerError
from node.cluster import peer_auth
from node.history.model import STEP_SECONDS, HistoryError, HistoryStore, Row, iso
from node.history.sqlite import MEMORY, SqliteHistory
from node.http import auth, bodies, validation
from node.http.appkeys import CLUSTER, CONFIG, HISTORY, PEER_GUARD

T = TypeVar("T")
routes = web.RouteTableDef()
# Name segments match [^/]+ rather than aiohttp's default [^{}/]+, so a name holding { or }
# reaches validation and answers 400 invalid-name, not 404.

PEER_HISTORY_PATH = "/peer/history"
DAY_S = 86400
DEFAULT_SPAN_S = DAY_S  # a series covers the last 24 hours unless asked otherwise
DEFAULT_PERIODS = {"hour": 24, "day": 30}  # rollups cover this many periods by default
MAX_MINUTE_SPAN_S = 366 * DAY_S  # minute steps over longer ranges are refused
DEFAULT_TOP, MAX_TOP = 10, 100
EARLIEST_S, LATEST_S = 0, 253402300800  # 1970-01-01 to 10000-01-01
PERIODS = ("hour", "day")
# "+" in a query string arrives as a space: "...T10:00:00 02:00" meant "+02:00".
SPACED_OFFSET = re.compile(r"(.*T[0-9:.]+) ([0-9]{2}(:?[0-9]{2})?)")


class HistoryUnavailable(ServerError):
    status = 503
    type = "history-unavailable"
    title = "The history store is unavailable"


def parse_time(raw: str, what: str) -> float:
    """ISO 8601 (naive means UTC) or unix seconds, as unix seconds."""
    text = raw.strip()
    try:
        seconds = float(text)
    except ValueError:
        spaced = SPACED_OFFSET.fullmatch(text)
        if spaced:
            text = f"{spaced[1]}+{spaced[2]}"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidBody(f"{what} must be ISO 8601 or unix seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not EARLIEST_S <= seconds < LATEST_S:
        raise InvalidBody(f"{what} must be between 1970 and 9999")
    return seconds


def time_range(query: Any, default_from: float, now: float) -> tuple[float, float]:
    start = parse_time(query["from"], "from") if "from" in query else default_from
    end = parse_time(query["to"], "to") if "to" in query else now
    if start >= end:
        raise InvalidBody("from must be before to")
    return start, end


def choice(query: Any, field: str, choices: Any, default: str) -> str:
    value = query.get(field, default)
    if value not in choices:
        raise InvalidBody(f"{field} must be one of {', '.join(choices)}")
    return str(value)


def top_count(query: Any) -> int:
    raw = query.get("top", str(DEFAULT_TOP))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_TOP:
        raise InvalidBody(f"top must be an integer from 1 to {MAX_TOP}")
    return int(raw)


def _buckets(start: float, end: float) -> tuple[int, int]:
    """[start, end) as whole seconds holding the same (whole-second) bucket starts."""
    return math.ceil(start), math.ceil(end)


async def _answer(
    request: web.Request,
    ask: Callable[[HistoryStore], Awaitable[T]],
    tenant: str,
    namespace: str,
    name: str | None,
    step: str,
    bounds: tuple[int, int],
) -> tuple[T, list[str]]:
    """ask(store) of the history store, or, with embedded stores in a cluster, of the merge
    of every reachable node's deciding rows; and the nodes that could not be asked."""
    store = request.app[HISTORY].history
    try:
        if not isinstance(store, SqliteHistory) or not request.app[CLUSTER].peers():
            return await ask(store), []
        found, unreachable = await _gather(request, store, tenant, namespace, name, step, bounds)
        merged = SqliteHistory(MEMORY)
        try:
            await merged.write(found)
            return await ask(merged), unreachable
        finally:
            await merged.close()
    except HistoryError as error:
        raise HistoryUnavailable(str(error)) from None


async def _gather(
    request: web.Request,
    store: SqliteHistory,
    tenant: str,
    namespace: str,
    name: str | None,
    step: str,
    bounds: tuple[int, int],
) -> tuple[list[Row], list[str]]:
    """This node's and every live peer's deciding rows; and the peers that did not answer."""
    cluster = request.app[CLUSTER]
    rows = await store.compact(tenant, namespace, name, step, *bounds)
    found: list[Row] = [(tenant, namespace, *row) for row in rows]
    peers = cluster.peers()
    unreachable = [m.node_id for m in peers if not cluster.alive(m.node_id)]
    live = [m for m in peers if cluster.alive(m.node_id)]
    query: dict[str, Any] = {"tenant": tenant, "namespace": namespace, "step": step}
    query.update({"from": bounds[0], "to": bounds[1]})
    if name is not None:
        query["name"] = name
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(_peer_rows(request, session, member.address, query) for member in live)
        )
    for member, peer_rows in zip(live, answers, strict=True):
        if peer_rows is None:
            unreachable.append(member.node_id)
        else:
            found += [(tenant, namespace, *row) for row in peer_rows]
    return found, sorted(unreachable)


async def _peer_rows(
    request: web.Request, session: aiohttp.ClientSession, address: str, query: dict[str, Any]
) -> list[tuple[str, int, int, float, int]] | None:
    config = request.app[CONFIG]
    # The signature covers the query, and the answer comes sealed under the session key, so
    # neither the question nor the rows can be changed on the way.
    path = PEER_HISTORY_PATH + "?" + urlencode(sorted((k, str(v)) for k, v in query.items()))
    headers = peer_auth.sign(config.cluster_secret, "GET", path, config.node_id, address)
    seal = peer_auth.client_seal(config.cluster_secret, headers, address)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    url = URL(f"http://{address}{path}", encoded=True)
    try:
        async with session.get(url, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                return None
            body = json.loads(seal.open(await response.read()))
        rows = body["rows"]
        # A peer before versions (model.py) answers none: its rows count as version 0.
        versions = body.get("versions") or [0] * len(rows)
        return [
            (str(n), int(b), int(v), float(at), int(version))
            for (n, b, v, at), version in zip(rows, versions, strict=True)
        ]
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, TypeError, KeyError):
        return None


@routes.get("/v1/namespaces/{namespace:[^/]+}/counters/{name:[^/]+}/history")
async def counter_history(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    name = validation.name(request.match_info["name"])
    tenant = auth.principal(request, auth.READ, namespace).tenant
    query = request.query
    step = choice(query, "step", STEP_SECONDS, "minute")
    now = time.time()
    start, end = time_range(query, now - DEFAULT_SPAN_S, now)
    if step == "minute" and end - start > MAX_MINUTE_SPAN_S:
        raise InvalidBody("at step=minute a range spans at most 366 days; use hour or day")
    bounds = _buckets(start, end)

    async def ask(store: HistoryStore) -> Any:
        return await store.series(tenant, namespace, name, step, *bounds)

    points, unreachable = await _answer(request, ask, tenant, namespace, name, step, bounds)
    body: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "step": step,
        "from": iso(start),
        "to": iso(end),
        "series": [{"bucket": iso(at), "value": v, "delta": delta} for at, v, delta in points],
    }
    if unreachable:
        body["unreachable_nodes"] = unreachable
    return bodies.json_response(body)


@routes.get("/v1/namespaces/{namespace:[^/]+}/rollups")
async def namespace_rollups(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    tenant = auth.principal(request, auth.READ, namespace).tenant
    query = request.query
    period = choice(query, "period", PERIODS, "hour")
    top = top_count(query)
    now = time.time()
    period_s = STEP_SECONDS[period]
    default_from = (now // period_s - (DEFAULT_PERIODS[period] - 1)) * period_s
    start, end = time_range(query, default_from, now)
    bounds = _buckets(start, end)

    async def ask(store: HistoryStore) -> Any:
        return await store.rollups(tenant, namespace, period, *bounds, top)

    rollups, unreachable = await _answer(request, ask, tenant, namespace, None, period, bounds)
    body: dict[str, Any] = {
        "namespace": namespace,
        "period": period,
        "from": iso(start),
        "to": iso(end),
        "top": top,
        "rollups": [
            {
                "period": iso(at),
                "total": total,
                "top": [{"name": name, "increase": increase} for name, increase in leaders],
            }
            for at, total, leaders in rollups
        ],
    }
    if unreachable:
        body["unreachable_nodes"] = unreachable
    return bodies.json_response(body)


@routes.get("/admin/history")
async def history_status(request: web.Request) -> web.Response:
    return bodies.json_response(request.app[HISTORY].status())


@routes.get(PEER_HISTORY_PATH)
async def peer_history(request: web.Request) -> web.Response:
    """A peer's deciding rows (see SqliteHistory.compact) for an embedded-store query."""
    config = request.app[CONFIG]
    caller = peer_auth.verify(
        config.cluster_secret,
        "GET",
        request.raw_path,
        request.headers,
        time.time(),
        target=config.address,
        guard=request.app[PEER_GUARD],
    )
    if caller is None:
        raise web.HTTPForbidden(reason="peer authentication failed")
    query = request.query
    tenant = query.get("tenant", "")
    if not tenant or set(tenant) - auth.TENANT_CHARS:
        raise InvalidBody("tenant is required")
    namespace = validation.name(query.get("namespace", ""), "namespace")
    name = validation.name(query["name"]) if "name" in query else None
    step = choice(query, "step", STEP_SECONDS, "minute")
    try:
        start, end = int(query["from"]), int(query["to"])
    except (KeyError, ValueError):
        raise InvalidBody("from and to must be unix seconds") from None
    store = request.app[HISTORY].history
    rows: list[tuple[str, int, int, float, int]] = []
    if isinstance(store, SqliteHistory):
        try:
            rows = await store.compact(tenant, namespace, name, step, start, end)
        except HistoryError as error:
            raise HistoryUnavailable(str(error)) from None
    seal = peer_auth.server_seal(config.cluster_secret, request.headers, config.address)
    # Versions beside the rows, not in them: a node before them reads rows of four fields.
    versions = [row[4] for row in rows]
    answer = {"node": config.node_id, "rows": [row[:4] for row in rows], "versions": versions}
    body = json.dumps(answer).encode()
    return web.Response(body=seal.seal(body), content_type="application/octet-stream")

"""Real-time reads (issue 14): a counter's windowed change, namespace aggregates, top-k.

Handlers parse and validate everything before asking anything (bad input is a 400 that
changes nothing), then ask node/realtime/fanout.py. The tenant comes from the token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.base.errors import InvalidBody
from node.base.keys import Key
from node.http import auth, bodies, validation
from node.http.appkeys import CLUSTER, FANOUT
from node.realtime.fanout import Result
from node.realtime.query import MAX_K, By, Kind, Query
from node.realtime.windows import BadSpan, parse_span, span_text

routes = web.RouteTableDef()
INT64 = 1 << 63  # a top entry's value is saturated to int64, as listings do


def span(request: web.Request, required: bool = False) -> int:
    """The ?window= span in minutes, 0 when absent; InvalidBody (400) when malformed."""
    raw = request.query.get("window")
    if raw is None:
        if required:
            raise InvalidBody("by=change needs a window, such as window=1h")
        return 0
    try:
        return parse_span(raw)
    except BadSpan as error:
        raise InvalidBody(f"{error}: 1m to 24h, in minutes (m) or hours (h)") from None


def _now_ms(request: web.Request) -> int:
    """The real-time clock: the one the change tap files minutes by (shifted in tests)."""
    return request.app[FANOUT].realtime.clock_ms()


def _incomplete(body: dict[str, Any], result: Result) -> None:
    if not result.complete:  # no live replica observed the whole window (see service.py)
        body["complete"] = False
        body["observed_since_ms"] = result.since_ms


async def window_of(
    request: web.Request, key: Key, span_min: int, value: int | None
) -> dict[str, Any]:
    """The "window" member of a counter read: its net change over the span up to `value`,
    the value the read answers (None: as the replica counts it), and the rate. The replica
    answering counts changes up to the value its change tap last handed on (`seen`), which
    may lag the read (a write still on its way there, or not yet tapped) or lead it (one
    since): the difference is a change of now, inside every window, so it is added and the
    change agrees with the value answered beside it. A replica that does not count the
    minute under way (it observes the shard from the next minute's cut, or waits to restore
    it) says no `seen`: the difference is not in what it counts."""
    shard = request.app[CLUSTER].shard_of(key)
    now_ms = _now_ms(request)
    query = Query(Kind.WINDOW, key[0], key[1], name=key[2], span_min=span_min, at_ms=now_ms)
    result = await request.app[FANOUT].run(query, [shard])
    change = result.change
    if value is not None and result.seen is not None:  # None: a node of an earlier version
        change += value - result.seen
    body: dict[str, Any] = {
        "span": span_text(span_min),
        "change": change,
        "rate_per_s": round(change / (span_min * 60), 6),
    }
    _incomplete(body, result)
    return body


def _prefix(request: web.Request) -> str:
    prefix = request.query.get("prefix", "")
    if prefix:
        validation.name(prefix, "prefix")
    return prefix


def _all_shards(request: web.Request) -> list[int]:
    return list(range(request.app[CLUSTER].config.shards))


@routes.get("/v1/namespaces/{namespace:[^/]+}/aggregate")
async def aggregate(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    prefix, span_min = _prefix(request), span(request)
    tenant = auth.principal(request, auth.READ, namespace).tenant
    query = Query(
        Kind.AGGREGATE, tenant, namespace, prefix=prefix, span_min=span_min, at_ms=_now_ms(request)
    )
    result = await request.app[FANOUT].run(query, _all_shards(request))
    body: dict[str, Any] = {
        "namespace": namespace,
        "prefix": prefix,
        "counters": result.counters,
        "total": result.total,
    }
    if span_min:
        body["window"] = {"span": span_text(span_min), "change": result.change}
        _incomplete(body, result)
    return bodies.json_response(body)


def _k(request: web.Request) -> int:
    raw = request.query.get("k", "10")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_K:
        raise InvalidBody(f"k must be an integer from 1 to {MAX_K}")
    return int(raw)


def _by(request: web.Request) -> By:
    raw = request.query.get("by", "value")
    if raw not in ("value", "change"):
        raise InvalidBody("by must be value or change")
    return By(raw)


@routes.get("/v1/namespaces/{namespace:[^/]+}/top")
async def top(request: web.Request) -> web.Response:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    prefix, k, by = _prefix(request), _k(request), _by(request)
    span_min = span(request, required=by is By.CHANGE)
    tenant = auth.principal(request, auth.READ, namespace).tenant
    now_ms = _now_ms(request)
    query = Query(
        Kind.TOP, tenant, namespace, prefix=prefix, span_min=span_min, by=by, k=k, at_ms=now_ms
    )
    result = await request.app[FANOUT].run(query, _all_shards(request))
    entries: list[dict[str, Any]] = []
    for name, value, change in result.top:
        entry: dict[str, Any] = {"name": name, "value": max(-INT64, min(INT64 - 1, value))}
        if span_min:
            entry["change"] = change or 0
        entries.append(entry)
    body: dict[str, Any] = {"namespace": namespace, "prefix": prefix, "by": by.value}
    if span_min:
        body["window"] = {"span": span_text(span_min)}
        _incomplete(body, result)
    body["top"] = entries
    return bodies.json_response(body)

"""`/openapi.json`: the OpenAPI 3.1 description of the client and admin API.

It lists every status an operation can answer, and the body of each (the bodies' schemas
are in node/openapi_schemas.py); tests/cluster/test_openapi_fuzz.py runs schemathesis
against a live node to keep it true.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import __version__
from node.http import bodies, openapi_realtime
from node.http.openapi_schemas import NAME, SCHEMAS, ref
from node.http.validation import IDEMPOTENCY_KEY, MAX_LIST_LIMIT, PREFIX_REGEX

routes = web.RouteTableDef()

TIME = {"type": "string", "description": "ISO 8601 (no offset: UTC) or unix seconds"}
CONSISTENCY = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["one", "quorum", "all"], "default": "quorum"},
}
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Applied once per key and tenant; a retry gets the first answer again. "
    "While an earlier attempt's coordinator cannot be asked whether it applied (paused, cut "
    "off), a retry answers 503 of type in-doubt with Retry-After and applies nothing",
    "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
}

# Why each status happens; every error body is application/problem+json.
ERRORS = {
    400: "Invalid name, parameter or body; nothing changed",
    401: "Missing or invalid bearer token; nothing changed",
    403: "The token lacks the scope or namespace, or creating the counter would pass the "
    "tenant's quota of counters (quota-exceeded); nothing changed",
    404: "No such member",
    409: "The membership change conflicts with the member's state; nothing changed",
    413: "Body larger than 1 MiB; nothing changed",
    422: "The counter would leave the 64-bit range, or the Idempotency-Key was used for a "
    "different request; nothing changed",
    429: "Over the tenant's rate limit; nothing changed",
    431: "Request headers larger than 16 KiB; nothing changed",
    502: "A peer failed",
    503: "Not enough live replicas or the store is unavailable (see may_have_applied); or, "
    "type in-doubt, an earlier attempt of the Idempotency-Key cannot be asked whether it "
    "applied: nothing applied now, retry after Retry-After",
    504: "Replicas did not answer in time; the write may still apply",
}
RATE_LIMIT_HEADERS = {
    "Retry-After": {
        "description": "Seconds until the request would fit (absent if it never will)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "RateLimit-Limit": {"schema": {"type": "string"}},
    "RateLimit-Remaining": {"schema": {"type": "string"}},
    "RateLimit-Reset": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
}
IN_DOUBT_RETRY_AFTER = {
    "description": "Seconds before a retry of an in-doubt Idempotency-Key (type in-doubt only)",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
CLIENT = (400, 401, 403, 429, 431)  # any /v1 operation
ADMIN = (401, 403, 431)  # any /admin operation


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": NAME}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code in sorted(codes):
        response: dict[str, Any] = {
            "description": ERRORS[code],
            "content": {"application/problem+json": {"schema": ref("Problem")}},
        }
        if code == 429:
            response["headers"] = RATE_LIMIT_HEADERS
        elif code == 503:
            response["headers"] = {"Retry-After": IN_DOUBT_RETRY_AFTER}
        responses[str(code)] = response
    return responses


def _body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


COUNTER_PARAMS = [_path_param("namespace"), _path_param("name"), CONSISTENCY]
COUNTER_READ_PARAMS = [*COUNTER_PARAMS, openapi_realtime.WINDOW_PARAM]
OBJECT = {"type": "object"}

PATHS: dict[str, Any] = {
    "/v1/namespaces/{namespace}/counters/{name}/increment": {
        "post": {
            "summary": "Add delta (default 1, negative decrements) to a counter",
            "parameters": [*COUNTER_PARAMS, IDEMPOTENCY],
            "requestBody": _body(ref("Increment"), required=False),
            "responses": {
                "200": _json(ref("Counter")),
                **_errors(*CLIENT, 413, 422, 503, 504),
            },
        }
    },
    "/v1/namespaces/{namespace}/counters/{name}": {
        "get": {
            "summary": "Read a counter (0 if never written); with window, its recent change",
            "parameters": COUNTER_READ_PARAMS,
            "responses": {"200": _json(ref("Counter")), **_errors(*CLIENT, 503, 504)},
        },
        "delete": {
            "summary": "Reset: clear what the replicas observed; concurrent increments survive",
            "parameters": COUNTER_PARAMS,
            "responses": {"200": _json(ref("Counter")), **_errors(*CLIENT, 503, 504)},
        },
    },
    "/v1/namespaces/{namespace}/batch": {
        "post": {
            "summary": "Apply many increments and reads; one result per op, in order",
            "description": "An op that fails (overflow, no quorum) has an error in its result; "
            "the others still apply. A batch that is invalid as a whole changes nothing.",
            "parameters": [_path_param("namespace"), CONSISTENCY, IDEMPOTENCY],
            "requestBody": _body(ref("Batch"), required=True),
            "responses": {
                "200": _json(ref("BatchResult")),
                **_errors(*CLIENT, 413, 422, 503, 504),
            },
        }
    },
    "/v1/namespaces/{namespace}/counters": {
        "get": {
            "summary": "List counters of a namespace in name order",
            "parameters": [
                _path_param("namespace"),
                _query("prefix", {"anyOf": [{**NAME, "pattern": PREFIX_REGEX}, {"const": ""}]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}),
                _query("cursor", {"type": "string", "description": "next_cursor of a listing"}),
                CONSISTENCY,
            ],
            "responses": {"200": _json(ref("CounterList")), **_errors(*CLIENT, 502, 503)},
        }
    },
    "/v1/namespaces/{namespace}/events": {
        "get": {
            "summary": "The namespace's changes as server-sent events, from any node",
            "description": "A text/event-stream: `event: change` with data ChangeEvent and an "
            "`id:` (the position in every node's log) to send back as Last-Event-ID, which "
            "resumes without a gap within the retention (--events-retention-s); beyond it, "
            "`event: gap` says whose events were missed. Comment heartbeats every "
            "--events-heartbeat-s; a client that stops reading gets `event: cutoff` and the "
            "connection closes. At least once across a node's death; in order per counter.",
            "parameters": [
                _path_param("namespace"),
                _query("prefix", {"anyOf": [NAME, {"const": ""}]}),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The id of the last event received: node:seq,...",
                    "schema": {
                        "type": "string",
                        "pattern": r"^[A-Za-z0-9._-]{1,64}:[0-9]{1,19}"
                        r"(,[A-Za-z0-9._-]{1,64}:[0-9]{1,19})*$",
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "The stream (see ChangeEvent for each event's data)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(*CLIENT, 503),
            },
        }
    },
    "/v1/namespaces/{namespace}/counters/{name}/history": {
        "get": {
            "summary": "A counter's value and delta per minute, hour or day",
            "parameters": [
                _path_param("namespace"),
                _path_param("name"),
                _query("from", TIME),
                _query("to", TIME),
                _query("step", {"type": "string", "enum": ["minute", "hour", "day"]}),
            ],
            "responses": {"200": _json(ref("Series")), **_errors(*CLIENT, 503)},
        }
    },
    "/v1/namespaces/{namespace}/rollups": {
        "get": {
            "summary": "A namespace's total increase and top counters per hour or day",
            "parameters": [
                _path_param("namespace"),
                _query("period", {"type": "string", "enum": ["hour", "day"]}),
                _query("from", TIME),
                _query("to", TIME),
                _query("top", {"type": "integer", "minimum": 1, "maximum": 100}),
            ],
            "responses": {"200": _json(ref("Rollups")), **_errors(*CLIENT, 503)},
        }
    },
    **openapi_realtime.paths(_json, _errors, _path_param, _query, CLIENT),
    "/v1/topology": {
        "get": {
            "summary": "Where each shard lives, for clients that route ops to coordinators",
            "description": "A counter's shard is blake2b-64(tenant/namespace/name) & (shards "
            "- 1) (ring/hashing.py); its coordinator is the first serving node of its "
            "preference list. Needs counters:read. Every answer of the node carries the "
            "current epoch in the Counters-Ring-Epoch header.",
            "responses": {"200": _json(ref("Topology")), **_errors(401, 403, 431)},
        }
    },
    "/problems": {
        "get": {
            "summary": "Every problem type the node answers with",
            "security": [],
            "responses": {"200": _json(OBJECT), **_errors(431)},
        }
    },
    "/problems/{slug}": {
        "get": {
            "summary": "A short page on one problem type (the `type` of a problem body)",
            "security": [],
            "parameters": [
                {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "What the problem means and what to do",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **_errors(404, 431),
            },
        }
    },
    "/admin/ring": {
        "get": {
            "summary": "Ring: members, placement, checksum, pending hand-offs",
            "responses": {"200": _json(ref("Ring")), **_errors(*ADMIN)},
        }
    },
    "/admin/history": {
        "get": {
            "summary": "The history recorder's status",
            "responses": {"200": _json(OBJECT), **_errors(*ADMIN)},
        }
    },
    "/admin/nodes": {
        "get": {
            "summary": "Members",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["nodes"],
                        "properties": {"nodes": {"type": "array", "items": ref("Member")}},
                    }
                ),
                **_errors(*ADMIN),
            },
        },
        "post": {
            "summary": "Admit a running, empty node found at an address",
            "requestBody": _body(
                {
                    "type": "object",
                    "required": ["address"],
                    "properties": {"address": {"type": "string", "description": "HOST:PORT"}},
                    "additionalProperties": False,
                },
                required=True,
            ),
            "responses": {
                "202": _json(ref("MemberChange"), "Joining"),
                **_errors(*ADMIN, 400, 409, 413, 503),
            },
        },
    },
    "/admin/nodes/{node_id}": {
        "delete": {
            "summary": "Leave with hand-off, or remove a dead node with force=true",
            "description": "The last live member can neither leave nor be removed (409).",
            "parameters": [
                {"name": "node_id", "in": "path", "required": True, "schema": {"type": "string"}},
                _query("force", {"type": "boolean", "default": False}),
            ],
            "responses": {
                "202": _json(ref("MemberChange"), "Leaving or removed"),
                **_errors(*ADMIN, 400, 404, 409),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Alive",
            "security": [],
            "responses": {"200": _json(OBJECT, "Alive"), **_errors(431)},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics, every family named counters_*; with --metrics-token "
            "set, it needs Authorization: Bearer <that token>",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(401, 431),
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Joined and caught up",
            "security": [],
            "responses": {"200": _json(OBJECT, "Ready"), **_errors(431, 503)},
        }
    },
}

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Counters", "version": __version__},
    "paths": PATHS,
    "components": {
        "schemas": {**SCHEMAS, **openapi_realtime.SCHEMAS},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
    # Every /v1 and /admin route needs a token (scopes counters:read, counters:write,
    # counters:admin); /healthz, /readyz and this document do not.
    "security": [{"bearer": []}],
}


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return bodies.json_response(SPEC)

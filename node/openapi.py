"""`/openapi.json`: the OpenAPI 3.1 description of the client and admin API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import __version__
from node.validation import MAX_BATCH_OPS, MAX_LIST_LIMIT

routes = web.RouteTableDef()

NAME = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,200}$"}
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
PROBLEM = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
CONSISTENCY = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["one", "quorum", "all"], "default": "quorum"},
}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": NAME}


def _json(schema_ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): PROBLEM for code in codes}


COUNTER_PARAMS = [_path_param("namespace"), _path_param("name"), CONSISTENCY]

PATHS: dict[str, Any] = {
    "/v1/namespaces/{namespace}/counters/{name}/increment": {
        "post": {
            "summary": "Add delta (default 1, negative decrements) to a counter",
            "parameters": COUNTER_PARAMS,
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Increment"}}
                },
            },
            "responses": {"200": _json("Counter"), **_errors(400, 422, 503, 504)},
        }
    },
    "/v1/namespaces/{namespace}/counters/{name}": {
        "get": {
            "summary": "Read a counter (0 if never written)",
            "parameters": COUNTER_PARAMS,
            "responses": {"200": _json("Counter"), **_errors(400, 503, 504)},
        },
        "delete": {
            "summary": "Reset: clear what the replicas observed; concurrent increments survive",
            "parameters": COUNTER_PARAMS,
            "responses": {"200": _json("Counter"), **_errors(400, 503, 504)},
        },
    },
    "/v1/namespaces/{namespace}/batch": {
        "post": {
            "summary": "Apply many increments and reads; one result per op, in order",
            "parameters": [_path_param("namespace"), CONSISTENCY],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
            },
            "responses": {"200": _json("BatchResult"), **_errors(400, 503, 504)},
        }
    },
    "/v1/namespaces/{namespace}/counters": {
        "get": {
            "summary": "List counters of a namespace in name order",
            "parameters": [
                _path_param("namespace"),
                {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _json("CounterList"), **_errors(400, 503)},
        }
    },
    "/v1/namespaces/{namespace}/counters/{name}/history": {
        "get": {
            "summary": "A counter's value and delta per minute, hour or day",
            "parameters": [
                _path_param("namespace"),
                _path_param("name"),
                {"name": "from", "in": "query", "schema": {"type": "string"}},
                {"name": "to", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "step",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["minute", "hour", "day"]},
                },
            ],
            "responses": {"200": {"description": "The series"}, **_errors(400, 503)},
        }
    },
    "/v1/namespaces/{namespace}/rollups": {
        "get": {
            "summary": "A namespace's total increase and top counters per hour or day",
            "parameters": [
                _path_param("namespace"),
                {
                    "name": "period",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["hour", "day"]},
                },
                {"name": "from", "in": "query", "schema": {"type": "string"}},
                {"name": "to", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "top",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
            ],
            "responses": {"200": {"description": "Rollups"}, **_errors(400, 503)},
        }
    },
    "/admin/ring": {
        "get": {
            "summary": "Ring: members, placement, checksum, pending hand-offs",
            "responses": {"200": {"description": "The ring"}},
        }
    },
    "/admin/nodes": {
        "get": {"summary": "Members", "responses": {"200": {"description": "Members"}}},
        "post": {
            "summary": "Admit a running, empty node found at an address",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["address"],
                            "properties": {"address": {"type": "string"}},
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {"202": {"description": "Joining"}, **_errors(400, 409, 503)},
        },
    },
    "/admin/nodes/{node_id}": {
        "delete": {
            "summary": "Leave with hand-off, or remove a dead node with force=true",
            "parameters": [
                {"name": "node_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean", "default": False}},
            ],
            "responses": {"202": {"description": "Leaving or removed"}, **_errors(400, 404, 409)},
        }
    },
    "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "Alive"}}}},
    "/readyz": {
        "get": {
            "summary": "Joined and caught up",
            "responses": {"200": {"description": "Ready"}, **_errors(503)},
        }
    },
}

SCHEMAS: dict[str, Any] = {
    "Increment": {
        "type": "object",
        "properties": {"delta": INT64},
        "additionalProperties": False,
    },
    "Counter": {
        "type": "object",
        "required": ["namespace", "name", "value", "consistency"],
        "properties": {
            "namespace": {"type": "string"},
            "name": {"type": "string"},
            "value": {"type": "integer"},
            "consistency": {"type": "string", "enum": ["one", "quorum", "all"]},
            "durability": {"type": "string", "enum": ["async", "sync"]},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["ops"],
        "additionalProperties": False,
        "properties": {
            "ops": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_OPS,
                "items": {
                    "type": "object",
                    "required": ["op", "name"],
                    "properties": {
                        "op": {"type": "string", "enum": ["increment", "get"]},
                        "name": NAME,
                        "delta": INT64,
                    },
                    "additionalProperties": False,
                },
            }
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["namespace", "consistency", "results"],
        "properties": {
            "namespace": {"type": "string"},
            "consistency": {"type": "string"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["op", "name"],
                    "properties": {
                        "op": {"type": "string"},
                        "name": {"type": "string"},
                        "value": {"type": "integer"},
                        "error": {"$ref": "#/components/schemas/Problem"},
                    },
                },
            },
        },
    },
    "CounterList": {
        "type": "object",
        "required": ["namespace", "counters", "next_cursor"],
        "properties": {
            "namespace": {"type": "string"},
            "counters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "value": {"type": "integer"}},
                },
            },
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    },
}

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Counters", "version": __version__},
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
    # Every /v1 and /admin route needs a token (scopes counters:read, counters:write,
    # counters:admin); /healthz, /readyz and this document do not.
    "security": [{"bearer": []}],
}


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(SPEC)

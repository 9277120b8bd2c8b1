"""The OpenAPI parts of the real-time reads (issue 14): windowed counter reads, namespace
aggregates and top-k; openapi.py merges them into /openapi.json."""

from __future__ import annotations

from typing import Any

from node.http.openapi_schemas import INT64, NAME
from node.realtime.query import MAX_K

SPAN = {
    "type": "string",
    "pattern": "^[1-9][0-9]{0,3}[mh]$",
    "description": "A trailing window, 1m to 24h at minute resolution (15m, 90m, 2h). It sums "
    "the last N whole minutes and the current one so far",
}
WINDOW_PARAM = {"name": "window", "in": "query", "required": False, "schema": SPAN}
INCOMPLETE = {
    "complete": {
        "const": False,
        "description": "present (false) when no live replica observed the whole window: "
        "every replica of a shard restarted within it without a usable window file (lost or "
        "unreadable data dir), a whole-cluster stop began after the window did and lasted "
        "over a minute, or, for about a minute, a restart and a join touched the same shard. "
        "The change is then exactly the net change since the answering replicas began "
        "observing, at latest observed_since_ms; changes before are missing, not estimated. "
        "Complete again once the window begins after observed_since_ms",
    },
    "observed_since_ms": {
        "type": "integer",
        "description": "unix ms (a minute boundary) from which the answer counts changes",
    },
}
COUNTER_WINDOW = {
    "type": "object",
    "required": ["span", "change", "rate_per_s"],
    "additionalProperties": False,
    "properties": {
        "span": SPAN,
        "change": {
            "type": "integer",
            "description": "net change over the window, up to the value answered beside it",
        },
        "rate_per_s": {"type": "number", "description": "change / the span's seconds"},
        **INCOMPLETE,
    },
}
PREFIX_PARAM = {
    "name": "prefix",
    "in": "query",
    "required": False,
    "schema": {"anyOf": [NAME, {"const": ""}]},
}

SCHEMAS: dict[str, Any] = {
    "CounterWindow": COUNTER_WINDOW,
    "Aggregate": {
        "type": "object",
        "required": ["namespace", "prefix", "counters", "total"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAME,
            "prefix": {"type": "string"},
            "counters": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "description": "sum of the counters' exact values"},
            "window": {
                "type": "object",
                "required": ["span", "change"],
                "additionalProperties": False,
                "properties": {"span": SPAN, "change": {"type": "integer"}},
            },
            **INCOMPLETE,
        },
    },
    "Top": {
        "type": "object",
        "required": ["namespace", "prefix", "by", "top"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAME,
            "prefix": {"type": "string"},
            "by": {"type": "string", "enum": ["value", "change"]},
            "window": {
                "type": "object",
                "required": ["span"],
                "additionalProperties": False,
                "properties": {"span": SPAN},
            },
            **INCOMPLETE,
            "top": {
                "type": "array",
                "maxItems": MAX_K,
                "description": "largest first, ties by name",
                "items": {
                    "type": "object",
                    "required": ["name", "value"],
                    "additionalProperties": False,
                    "properties": {
                        "name": NAME,
                        "value": {**INT64, "description": "saturated to int64, unmarked"},
                        "change": {"type": "integer", "description": "with a window only"},
                    },
                },
            },
        },
    },
}


def paths(
    json: Any, errors: Any, path_param: Any, query: Any, client: tuple[int, ...]
) -> dict[str, Any]:
    """The two namespace routes, built with openapi.py's helpers."""
    return {
        "/v1/namespaces/{namespace}/aggregate": {
            "get": {
                "summary": "Counters under a prefix: how many, their sum, their windowed change",
                "description": "Exact over one live replica per shard, fresh within the "
                "replication delay and 0.1 s; no scan (per-shard indexes).",
                "parameters": [path_param("namespace"), PREFIX_PARAM, WINDOW_PARAM],
                "responses": {
                    "200": json({"$ref": "#/components/schemas/Aggregate"}),
                    **errors(*client, 503),
                },
            }
        },
        "/v1/namespaces/{namespace}/top": {
            "get": {
                "summary": "The k counters with the largest value or windowed change",
                "description": "by=change needs a window. Exact: a counter lives in one "
                "shard, and the k best of each shard's k best are the k best.",
                "parameters": [
                    path_param("namespace"),
                    PREFIX_PARAM,
                    WINDOW_PARAM,
                    query("k", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}),
                    query(
                        "by", {"type": "string", "enum": ["value", "change"], "default": "value"}
                    ),
                ],
                "responses": {
                    "200": json({"$ref": "#/components/schemas/Top"}),
                    **errors(*client, 503),
                },
            }
        },
    }

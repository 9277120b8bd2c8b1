"""The schemas of /openapi.json's bodies: what the node answers, field by field, and the
request bodies, from the msgspec Structs that decode them."""

from __future__ import annotations

from typing import Any

import msgspec

from node.http import bodies
from node.http.validation import NAME_MAX_BYTES, NAME_REGEX

NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_BYTES, "pattern": NAME_REGEX}
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
ISO = {"type": "string", "description": "ISO 8601 in UTC"}
# The int64 rule (crdt/pncounter.py): concurrent increments may merge past int64; the value
# answered is then the nearest bound, marked saturated.
VALUE = {
    **INT64,
    "description": (
        "The counter's value. Increments that would move it out of int64 are refused (422), "
        "but increments accepted concurrently on different replicas can merge to an exact "
        "value outside int64: the counter keeps it exactly, and answers the nearest bound "
        "(-2^63 or 2^63-1) with saturated: true. Such a counter accepts deltas that bring it "
        "back toward the range; a replay answers the value first answered, unmarked."
    ),
}
LISTED_VALUE = {**INT64, "description": "saturated to int64 like Counter.value, unmarked"}
HINTED = {
    "type": "boolean",
    "description": "present (true) on a consistency=one increment that a node cut off from "
    "every replica kept, to hand over to them once it reaches them; value is its own view "
    "and replicas is absent",
}
SATURATED = {
    "type": "boolean",
    "description": "present (true) when the exact value lies outside int64; value is its bound",
}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


COUNTER_RESULT = {
    "type": "object",
    "required": ["op", "name"],
    "properties": {
        "op": {"type": "string", "enum": ["increment", "get"]},
        "name": {"type": "string"},
        "value": VALUE,
        "replayed": {"type": "boolean"},
        "saturated": SATURATED,
        "hinted": HINTED,
        "error": ref("Problem"),
    },
    "oneOf": [{"required": ["value"]}, {"required": ["error"]}],
}

# The request bodies' schemas come from the Structs that decode them (node/http/bodies.py).
_, REQUEST_SCHEMAS = msgspec.json.schema_components(
    (bodies.Increment, bodies.Batch), ref_template="#/components/schemas/{name}"
)

SCHEMAS: dict[str, Any] = {
    **REQUEST_SCHEMAS,
    "ChangeEvent": {
        "type": "object",
        "description": "The data of an SSE `event: change` (and of a Redis stream entry): "
        "one counter's change, coalesced to at most one event per counter per "
        "--events-min-interval-ms",
        "required": ["name", "value", "change", "at", "version"],
        "properties": {
            "name": NAME,
            "value": LISTED_VALUE,
            "change": {
                "type": "integer",
                "description": "net change since its last event (on an SSE stream: since "
                "the last event of the counter that stream sent)",
            },
            "at": {**ISO, "description": "when it was published, ISO 8601 UTC with ms"},
            "version": {
                "type": "integer",
                "minimum": 0,
                "description": "the counter's state's version: larger for every later "
                "state, a decrement's too. A stream never sends one below the last it sent "
                "of the counter; a reader that reconnects, or of the Redis stream, drops an "
                "event whose version is below the last it took of that counter",
            },
            "replayed": {
                "type": "boolean",
                "description": "present (true) when republished by a node that took the "
                "shard over: value is current, change may repeat an earlier event's",
            },
        },
    },
    "Counter": {
        "type": "object",
        "required": ["namespace", "name", "value", "consistency"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAME,
            "name": NAME,
            "value": VALUE,
            "saturated": SATURATED,
            "hinted": HINTED,
            "consistency": {"type": "string", "enum": ["one", "quorum", "all"]},
            "durability": {"type": "string", "enum": ["async", "sync"]},
            "replicas": {
                "type": "integer",
                "minimum": 1,
                "description": "writes: replicas (the coordinator included) that held the "
                "write when it was answered, as its consistency promised; `one`: 1, the "
                "others get it at once but were not waited for",
            },
            "window": {"$ref": "#/components/schemas/CounterWindow"},
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["namespace", "consistency", "results"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAME,
            "consistency": {"type": "string", "enum": ["one", "quorum", "all"]},
            "durability": {"type": "string", "enum": ["async", "sync"]},
            "results": {"type": "array", "items": COUNTER_RESULT},
        },
    },
    "CounterList": {
        "type": "object",
        "required": ["namespace", "counters", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAME,
            "counters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "value"],
                    "properties": {"name": NAME, "value": LISTED_VALUE},
                },
            },
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Series": {
        "type": "object",
        "required": ["namespace", "name", "step", "from", "to", "series"],
        "properties": {
            "namespace": NAME,
            "name": NAME,
            "step": {"type": "string", "enum": ["minute", "hour", "day"]},
            "from": ISO,
            "to": ISO,
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["bucket", "value", "delta"],
                    "properties": {"bucket": ISO, "value": INT64, "delta": {"type": "integer"}},
                },
            },
            "unreachable_nodes": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Rollups": {
        "type": "object",
        "required": ["namespace", "period", "from", "to", "top", "rollups"],
        "properties": {
            "namespace": NAME,
            "period": {"type": "string", "enum": ["hour", "day"]},
            "from": ISO,
            "to": ISO,
            "top": {"type": "integer", "minimum": 1, "maximum": 100},
            "rollups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["period", "total", "top"],
                    "properties": {
                        "period": ISO,
                        "total": {"type": "integer"},
                        "top": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "increase"],
                                "properties": {
                                    "name": NAME,
                                    "increase": {"type": "integer", "minimum": 1},
                                },
                            },
                        },
                    },
                },
            },
            "unreachable_nodes": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Member": {
        "type": "object",
        "required": ["node_id", "address", "status", "version", "shards"],
        "properties": {
            "node_id": {"type": "string"},
            "address": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["joining", "up", "leaving", "down", "removed", "unknown"],
            },
            "version": {"type": "integer"},
            "shards": {"type": "integer", "minimum": 0},
        },
    },
    "MemberChange": {
        "type": "object",
        "required": ["node_id", "status"],
        "properties": {
            "node_id": {"type": "string"},
            "address": {"type": "string"},
            "status": {"type": "string"},
        },
    },
    "Ring": {
        "type": "object",
        "required": ["node", "epoch", "checksum", "shards", "replicas", "members", "pending"],
        "properties": {
            "node": {"type": "string"},
            "epoch": {"type": "integer"},
            "checksum": {"type": "string"},
            "shards": {"type": "integer"},
            "replicas": {"type": "integer"},
            "members": {"type": "array", "items": ref("Member")},
            "pending": {"type": ["object", "null"]},
        },
    },
    "Topology": {
        "type": "object",
        "required": ["epoch", "checksum", "shards", "replicas", "tenant", "nodes"],
        "properties": {
            "epoch": {"type": "integer", "minimum": 0},
            "checksum": {"type": "string"},
            "shards": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1},
            "tenant": {"type": "string", "description": "the tenant of the caller's token"},
            "hash": {"type": "string"},
            "nodes": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["address", "status"],
                    "properties": {
                        "address": {"type": ["string", "null"]},
                        "status": {"type": "string"},
                    },
                },
            },
            "preference_lists": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "Problem": {
        "type": "object",
        "description": "Problem details (RFC 9457); `type` is stable, clients may branch on it",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri-reference",
                "description": "/problems/<slug>, a page every node serves",
            },
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "may_have_applied": {"type": "boolean"},
            "retry_after_s": {
                "type": "integer",
                "minimum": 1,
                "description": "type in-doubt: an earlier attempt of this Idempotency-Key is "
                "held by a node that cannot be asked now; nothing applied; retry with the same "
                "key after this many seconds (also the Retry-After header)",
            },
        },
    },
}

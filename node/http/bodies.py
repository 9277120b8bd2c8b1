"""JSON in and out of the client API: request bodies as msgspec Structs, replies by msgspec.

A body is first decoded straight into a Struct, which checks its shape and types in C (an
object with only the known fields, delta an int64 and never 1.0, true or "1", an op tagged
increment or get). A body that fails there is decoded again by `json.loads` and checked
field by field in Python (validation.py), which finds the first mistake and says what it
is, so a refusal keeps the problem type and detail it always had. The Structs accept
nothing the Python checks would refuse, with the same meaning (duplicate keys: the last
wins in both); tests/node/http/test_bodies.py checks that on generated bodies. Names are
checked by `validation.name` either way: the JSON Schema regex alone would let "a\\n" by.

The Structs are also where /openapi.json's Increment and Batch schemas come from.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, Struct, UnsetType

from crdt.pncounter import INT64_MAX, INT64_MIN
from node.base.errors import InvalidBody
from node.http import validation

Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
# The name rule is enforced by validation.name; the schema only publishes it.
Name = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=validation.NAME_MAX_BYTES,
        extra_json_schema={"pattern": validation.NAME_REGEX},
    ),
]


class Increment(Struct, forbid_unknown_fields=True):
    """The body of POST .../increment; an empty body means delta 1."""

    delta: Annotated[
        Int64, Meta(description='a JSON integer literal: 1.0, true and "1" are refused (400)')
    ] = 1


class IncrementOp(Struct, tag_field="op", tag="increment", forbid_unknown_fields=True):
    name: Name
    # UNSET, not 1, when absent: an idempotency fingerprint is of the body as sent.
    delta: Int64 | UnsetType = UNSET


class GetOp(Struct, tag_field="op", tag="get", forbid_unknown_fields=True):
    name: Name


class Batch(Struct, forbid_unknown_fields=True):
    ops: Annotated[
        list[IncrementOp | GetOp], Meta(min_length=1, max_length=validation.MAX_BATCH_OPS)
    ]


_increment_decoder = msgspec.json.Decoder(Increment)
_batch_decoder = msgspec.json.Decoder(Batch)
encode = msgspec.json.Encoder().encode


def increment_delta(raw: bytes) -> int:
    """The delta an increment body asks for, or InvalidBody / InvalidDelta (400)."""
    try:
        return _increment_decoder.decode(raw).delta
    except msgspec.DecodeError:  # ValidationError included
        pass
    body = validation.parse_object(raw, empty_ok=True)
    validation.only_fields(body, {"delta"})
    return validation.delta(body.get("delta", 1))


def batch(raw: bytes) -> Batch:
    """The batch a body asks for, every name checked, or the first mistake as a 400."""
    try:
        found = _batch_decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included
        return checked_batch(validation.parse_object(raw, empty_ok=False))
    name = validation.name
    for op in found.ops:
        name(op.name)
    return found


def checked_batch(body: dict[str, Any]) -> Batch:
    """A decoded body checked field by field, in order: the first mistake is the one named."""
    validation.only_fields(body, {"ops"})
    raw_ops = body.get("ops")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise InvalidBody("ops must be a non-empty list")
    if len(raw_ops) > validation.MAX_BATCH_OPS:
        raise InvalidBody(f"a batch holds at most {validation.MAX_BATCH_OPS} ops")
    ops: list[IncrementOp | GetOp] = []
    for index, raw in enumerate(raw_ops):
        if not isinstance(raw, dict):
            raise InvalidBody(f"ops[{index}] must be an object")
        kind = raw.get("op")
        if kind not in ("increment", "get"):
            raise InvalidBody(f"ops[{index}].op must be increment or get")
        allowed = {"op", "name", "delta"} if kind == "increment" else {"op", "name"}
        validation.only_fields(raw, allowed)
        if not isinstance(raw.get("name"), str):
            raise InvalidBody(f"ops[{index}].name must be a string")
        name = validation.name(raw["name"])
        if kind == "get":
            ops.append(GetOp(name))
        elif "delta" in raw:
            ops.append(IncrementOp(name, validation.delta(raw["delta"])))
        else:
            ops.append(IncrementOp(name))
    return Batch(ops)


def as_json(value: Struct) -> Any:
    """The body as plain JSON values, as a client sent it (absent fields stay absent)."""
    return msgspec.to_builtins(value)


def json_response(body: Any, status: int = 200) -> web.Response:
    """web.json_response with msgspec's encoder: compact, UTF-8, several times faster."""
    return web.Response(
        body=encode(body), status=status, content_type="application/json", charset="utf-8"
    )

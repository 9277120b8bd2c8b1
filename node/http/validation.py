"""Checks on what clients send: names, deltas, consistency levels, bodies.

Every check runs before any state changes, and each failure is a ClientError (400) with a
stable problem type, so bad input never changes a counter.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web

from crdt.pncounter import INT64_MAX, INT64_MIN
from node.base.errors import ClientError, InvalidBody, InvalidConsistency, InvalidDelta, InvalidName
from node.coordination.ops import CONSISTENCY_LEVELS

NAME_CHARS = re.compile(r"[A-Za-z0-9._:-]{1,200}")
# The same rule as one ECMA-262 regex for /openapi.json (with maxLength 200): no two dots in a
# row and not "." alone, since "." and ".." are path segments that clients normalise away.
NAME_REGEX = r"^\.?([A-Za-z0-9_:-]\.?)+$"
NAME_MAX_BYTES = 200
PREFIX_REGEX = r"^(\.?([A-Za-z0-9_:-]\.?)+|\.)$"  # a listing's prefix: a name, or '.'
MAX_BATCH_OPS = 1000
SINGLE_HEADERS = ("Authorization", "Idempotency-Key", "Last-Event-ID")
MAX_LIST_LIMIT = 1000
MAX_HEADER_BYTES = 16 * 1024  # all header names and values of a request together
# aiohttp's own parser limits, set above ours so that our 431 answers first; a single line
# past them still gets aiohttp's plain 400, and memory stays bounded either way.
PARSER_LIMITS = {"max_line_size": 32 * 1024, "max_field_size": 32 * 1024}


class HeadersTooLarge(ClientError):
    status = 431
    type = "headers-too-large"
    title = "Request header fields too large"


def headers(request: web.Request) -> None:
    """431 before anything else runs when the request's headers are too large; 400 when a
    query parameter or a header that says what to do is given twice (which one would count
    is a guess: the first, silently, before)."""
    size = sum(len(name) + len(value) for name, value in request.raw_headers)
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"request headers hold {size} bytes, at most {MAX_HEADER_BYTES}")
    query = request.query
    if len(query) > 1 and len(set(query)) < len(query):
        twice = sorted({key for key in query if len(query.getall(key)) > 1})
        raise ClientError(f"query parameter {twice[0]!r} is given more than once")
    given = request.headers
    for header in SINGLE_HEADERS:
        if len(given.getall(header, ())) > 1:
            raise ClientError(f"header {header} is given more than once")


def name(value: str, what: str = "name") -> str:
    if NAME_CHARS.fullmatch(value) is None or ".." in value or value == ".":
        raise InvalidName(
            f"{what} must be 1-200 characters of [A-Za-z0-9._:-], without '..', and not '.'"
        )
    return value


def prefix(value: str) -> str:
    """A listing's name prefix: the characters of a name; '.' alone, unlike a name, is one."""
    if NAME_CHARS.fullmatch(value) is None or ".." in value:
        raise InvalidName("prefix must be 1-200 characters of [A-Za-z0-9._:-], without '..'")
    return value


def delta(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass; it is not a delta
        raise InvalidDelta("delta must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidDelta("delta must fit in a signed 64-bit integer")
    return value


def consistency(request: web.Request) -> str:
    level = request.query.get("consistency", "quorum")
    if level not in CONSISTENCY_LEVELS:
        raise InvalidConsistency("consistency must be one, quorum or all")
    return level


async def json_object(request: web.Request, *, empty_ok: bool) -> dict[str, Any]:
    return parse_object(await request.read(), empty_ok=empty_ok)


def parse_object(raw: bytes, *, empty_ok: bool) -> dict[str, Any]:
    """A body that must be a JSON object ({} for an empty one, when empty_ok)."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise InvalidBody("a JSON object body is required")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidBody("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidBody("body must be a JSON object")
    return body


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidBody(f"unknown field(s): {', '.join(unknown)}")


# Visible ASCII but "#": a batch's op i keeps its receipt under "<key>#<i>" (counters.py),
# so a single op's key with "#" could take the receipt of a batch's op, which then fails
# alone (422) while the rest of its batch applies.
IDEMPOTENCY_KEY = re.compile(r"[\x21\x22\x24-\x7e]{1,200}")


def idempotency(request: web.Request, body: Any) -> tuple[str, str]:
    """The Idempotency-Key header (or "") and a fingerprint of what the request asks for."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return "", ""
    # An empty key is refused, not ignored: the client meant its retries to apply once.
    if IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise InvalidBody("Idempotency-Key must be 1-200 visible ASCII characters other than #")
    canonical = json.dumps([request.method, request.path, body], sort_keys=True)
    return key, hashlib.sha256(canonical.encode()).hexdigest()[:32]


def limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise InvalidBody(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(raw)

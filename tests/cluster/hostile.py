"""What the hostile-input tests share: one live node with JWT auth, a synchronous client
(Hypothesis runs examples without an event loop), and the rules they check against.

Names are 1-200 characters of [A-Za-z0-9._:-], without ".." and not "."; anything else
answers 400 and creates nothing. Deltas are JSON integers in the signed 64-bit range;
anything else answers 400, a total that would leave the range answers 422, and neither
changes a counter. Each property uses its own tenant, so what one test writes cannot hide
what another should have refused. test_bad_input.py keeps the hand-picked cases.
"""

from __future__ import annotations

import http.client
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from node.http.auth import ADMIN, READ, WRITE
from tests.cluster.harness import Node, one_node
from tests.support import client_token

SECRET = "hostile-input-secret-" * 3
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
ALLOWED = string.ascii_letters + string.digits + "._:-"
PROBLEM_JSON = "application/problem+json"
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The body of each test module's `node` fixture: one node for the module."""
    root: Path = tmp_path_factory.mktemp("hostile")
    with one_node(root, COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET) as started:
        yield started


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any
    request: str  # method and path, for failure messages


class Client:
    """A synchronous client for one tenant: Hypothesis runs examples without an event loop.
    Paths go out exactly as given (already percent-encoded), one connection per request."""

    def __init__(self, node: Node, tenant: str) -> None:
        self.node = node
        token = client_token(SECRET, tenant, [READ, WRITE, ADMIN], ttl_s=3600)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: bytes | None = None, **extra: str) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=10)
        try:
            headers = {**self.headers, **{k.replace("_", "-"): v for k, v in extra.items()}}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        content_type = response.getheader("Content-Type", "").split(";")[0]
        body_out = json.loads(raw) if raw else None
        return Reply(response.status, content_type, body_out, f"{method} {path[:300]}")

    def value(self, ns: str, name: str) -> int:
        reply = self.call("GET", f"/v1/namespaces/{quote(ns)}/counters/{quote(name)}")
        assert reply.status == 200, reply
        return int(reply.body["value"])

    def names(self, ns: str) -> list[str]:
        reply = self.call("GET", f"/v1/namespaces/{quote(ns)}/counters?limit=1000")
        assert reply.status == 200, reply
        return [counter["name"] for counter in reply.body["counters"]]


def is_name(text: str) -> bool:
    """The rule as the issue states it, written apart from node/validation.py."""
    return (
        0 < len(text.encode()) <= 200
        and all(c in ALLOWED for c in text)
        and ".." not in text
        and text != "."
    )


def path_segment(text: str, every_byte: bool) -> str:
    """text as one path segment: quoted as a client would, or every byte as %XX (which a
    server must decode to the same name). Dot-only names are always %-encoded, since a
    literal "." or ".." segment is a path step, not a name."""
    if every_byte or set(text) <= {"."}:
        return "".join(f"%{byte:02X}" for byte in text.encode())
    return quote(text, safe="")


def assert_problem(reply: Reply, status: int, *types: str) -> None:
    assert reply.status == status, reply
    assert reply.content_type == PROBLEM_JSON, reply
    assert isinstance(reply.body, dict) and reply.body["status"] == status, reply
    assert reply.body["type"].rsplit("/", 1)[-1] in types, reply


valid_names = st.text(alphabet=ALLOWED, min_size=1, max_size=200).filter(is_name)
# Look-alikes and separators that a sloppy server might fold, strip or split into a valid name.
HOSTILE_PIECES = [
    "/", "\\", "..", "\x00", " ", "\t", "\n", "\r\n", "%", "%2F", "%2e%2e", "?", "#", ";",
    "\u0430",  # Cyrillic a
    "\uff41",  # fullwidth a
    "\u212a",  # Kelvin sign, folds to K
    "\u0131",  # dotless i
    "e\u0301",  # e + combining acute
    "\u00e9",  # precomposed e-acute
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\u2024",  # one dot leader
    "\uff0e",  # fullwidth full stop
    "\u2215",  # division slash
    "\u00a0",  # no-break space
    "\U0001f600",
]  # fmt: skip
invalid_names = st.one_of(
    st.text(min_size=1, max_size=30).filter(lambda text: not is_name(text)),
    st.tuples(
        st.text(alphabet=ALLOWED, max_size=10),
        st.sampled_from(HOSTILE_PIECES),
        st.text(alphabet=ALLOWED, max_size=10),
    ).map("".join),
    st.sampled_from([".", "..", "...", "a..b", ".a.."]),
    st.text(alphabet=ALLOWED.replace(".", ""), min_size=201, max_size=300),
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()

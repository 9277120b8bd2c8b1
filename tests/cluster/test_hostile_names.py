"""Hypothesis-generated namespace and counter names against a live node: valid ones
round-trip, invalid ones (separators, dots, look-alikes, over 200 bytes) answer 400 and
create nothing. The rules are in tests/cluster/hostile.py."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.cluster.harness import Node
from tests.cluster.hostile import (
    ALLOWED,
    FUZZ,
    Client,
    assert_problem,
    invalid_names,
    is_name,
    path_segment,
    start_node,
    valid_names,
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory)


@FUZZ
@given(
    ns=valid_names,
    name=valid_names,
    delta=st.integers(-(10**6), 10**6),
    every_byte=st.booleans(),
)
@example(ns="x" * 200, name="y" * 200, delta=3, every_byte=False)
@example(ns=".a", name="a.", delta=-1, every_byte=True)
@example(ns=":", name="-_.:", delta=0, every_byte=False)
def test_valid_names_round_trip(node: Node, ns: str, name: str, delta: int, every_byte: bool):
    client = Client(node, "valid")
    before = client.value(ns, name)
    base = (
        f"/v1/namespaces/{path_segment(ns, every_byte)}/counters/{path_segment(name, every_byte)}"
    )
    reply = client.call("POST", base + "/increment", json.dumps({"delta": delta}).encode())
    assert reply.status == 200, reply
    assert (reply.body["namespace"], reply.body["name"]) == (ns, name)
    assert reply.body["value"] == before + delta
    assert client.call("GET", base).body["value"] == before + delta
    listing = client.call("GET", f"/v1/namespaces/{quote(ns)}/counters?prefix={quote(name)}")
    assert listing.status == 200, listing
    assert name in [counter["name"] for counter in listing.body["counters"]]


@FUZZ
@given(name=invalid_names, every_byte=st.booleans())
@example(name="a/b", every_byte=False)
@example(name="x" * 201, every_byte=False)
@example(name="\x00", every_byte=True)
def test_invalid_counter_names_answer_400_and_create_nothing(
    node: Node, name: str, every_byte: bool
):
    client = Client(node, "bad-names")
    ns = "hostile"
    base = f"/v1/namespaces/{ns}/counters/{path_segment(name, every_byte)}"
    listing = f"/v1/namespaces/{ns}/counters?prefix={path_segment(name, True)}"
    for method, path, body in (
        ("POST", base + "/increment", b'{"delta": 5}'),
        ("GET", base, None),
        ("DELETE", base, None),
        ("GET", base + "/history", None),
        *([("GET", listing, None)] if name != "." else []),  # '.' begins names: a prefix
    ):
        assert_problem(client.call(method, path, body), 400, "invalid-name")
    batch = {"ops": [{"op": "increment", "name": "fine"}, {"op": "increment", "name": name}]}
    reply = client.call("POST", f"/v1/namespaces/{ns}/batch", json.dumps(batch).encode())
    assert_problem(reply, 400, "invalid-name")
    # Not under any name: a server that folded, stripped or split the name would show it here.
    assert client.names(ns) == []


def look_alikes(text: str) -> set[str]:
    """Valid names a server might wrongly turn text into."""
    folded = unicodedata.normalize("NFKC", text)
    found = {folded, text.strip(), unquote(text), text.replace("/", ""), text.lower()}
    found |= {"".join(c for c in form if c in ALLOWED) for form in (text, folded)}
    return {form for form in found if is_name(form)}


@FUZZ
@given(ns=invalid_names, every_byte=st.booleans())
@example(ns="\uff57\uff45\uff42", every_byte=False)  # fullwidth "web"
@example(ns=" web", every_byte=True)
def test_invalid_namespaces_answer_400_and_create_nothing(node: Node, ns: str, every_byte: bool):
    client = Client(node, "bad-namespaces")
    base = f"/v1/namespaces/{path_segment(ns, every_byte)}"
    for method, path, body in (
        ("POST", base + "/counters/victim/increment", b"{}"),
        ("GET", base + "/counters/victim", None),
        ("GET", base + "/counters", None),
        ("GET", base + "/rollups", None),
        ("POST", base + "/batch", b'{"ops": [{"op": "increment", "name": "victim"}]}'),
    ):
        assert_problem(client.call(method, path, body), 400, "invalid-name")
    for form in look_alikes(ns):
        assert client.names(form) == [], form

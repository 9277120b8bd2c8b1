"""Hypothesis-generated increment and batch bodies and Idempotency-Key values against a
live node: each applies exactly, or answers 4xx problem+json and changes nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.cluster.harness import Node
from tests.cluster.hostile import (
    FUZZ,
    INT64_MAX,
    INT64_MIN,
    Client,
    assert_problem,
    encode,
    invalid_names,
    is_name,
    start_node,
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory)


# JSON of every shape, including the ones Python's json module writes but JSON forbids
# (NaN, Infinity), integers far past 64 bits, and integral floats like 3.0.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.integers(-(2**40), 2**40).map(float)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
int64_edges = st.sampled_from(
    [INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, 2**63, INT64_MIN - 1, 0, 1, -1]
)
in_range = st.one_of(
    st.integers(-1000, 1000),
    st.integers(INT64_MIN, INT64_MAX),
    int64_edges.filter(lambda delta: INT64_MIN <= delta <= INT64_MAX),
)
deltas = st.one_of(in_range, int64_edges)
delta_fields = st.one_of(deltas, json_values, st.integers().map(str))


increment_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"delta": delta_fields}).map(encode),
    st.dictionaries(st.sampled_from(["delta", "Delta", "value", "op", ""]), delta_fields).map(
        encode
    ),
    json_values.map(encode),
    st.binary(max_size=40),
    st.just(b""),
)


def expected_delta(raw: bytes) -> int | None:
    """The delta an increment body asks for, or None if it must be refused: an empty body
    means 1; otherwise a JSON object with at most a `delta` that is a 64-bit integer."""
    if not raw.strip():
        return 1
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) - {"delta"}:
        return None
    delta = body.get("delta", 1)
    if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
        return None
    return delta


@dataclass
class Counter:
    """What a counter written only through this node must hold: an increment is refused
    (422) exactly when the value would leave int64. A full slot is not a refusal: +2**62 and
    -2**62 four times over fill the node's slot, and the node moves to a fresh actor slot
    (node/coordination/rotation.py), so an in-range counter accepts increments forever."""

    value: int = 0

    def add(self, delta: int) -> bool:
        """Apply delta as the node must, or return False if the node must refuse it."""
        if not INT64_MIN <= self.value + delta <= INT64_MAX:
            return False
        self.value += delta
        return True


fresh = itertools.count()  # a namespace per example, so a model starts from a known slot


@FUZZ
@given(start=in_range, raw=increment_bodies)
@example(start=INT64_MAX, raw=b'{"delta": 1}')
@example(start=INT64_MIN, raw=b'{"delta": -1}')
@example(start=INT64_MIN, raw=b"")
@example(start=5, raw=b'{"delta": 3.0}')
@example(start=5, raw=b'{"delta": true}')
@example(start=5, raw=b'{"delta": NaN}')
@example(start=5, raw=b'{"delta": {"delta": 1}}')
@example(start=5, raw=b'{"delta": 1, "delta": "1"}')
def test_increment_bodies_apply_exactly_or_change_nothing(node: Node, start: int, raw: bytes):
    client = Client(node, "bodies")
    ns = f"bodies-{next(fresh)}"
    path = f"/v1/namespaces/{ns}/counters/c/increment"
    counter = Counter()
    assert counter.add(start)
    assert client.call("POST", path, encode({"delta": start})).status == 200
    reply = client.call("POST", path, raw)
    delta = expected_delta(raw)
    if delta is None:
        assert_problem(reply, 400, "invalid-delta", "invalid-body")
    elif counter.add(delta):
        assert reply.status == 200, (raw, reply)
        assert reply.body["value"] == counter.value
    else:
        assert_problem(reply, 422, "overflow")
    assert client.value(ns, "c") == counter.value


BATCH_NAMES = ["b1", "b2", "b3"]
batch_names = st.sampled_from(BATCH_NAMES)
good_ops = st.one_of(
    st.fixed_dictionaries(
        {"op": st.just("increment"), "name": batch_names}, optional={"delta": deltas}
    ),
    st.fixed_dictionaries({"op": st.just("get"), "name": batch_names}),
)
bad_ops = st.one_of(
    json_values,
    st.fixed_dictionaries({"op": json_values, "name": batch_names}),
    st.fixed_dictionaries({"op": st.just("increment"), "name": invalid_names | json_values}),
    st.fixed_dictionaries({"op": st.just("increment"), "name": batch_names, "delta": delta_fields}),
    st.fixed_dictionaries({"op": st.just("get"), "name": batch_names, "delta": deltas}),
    st.fixed_dictionaries({"op": st.just("get"), "name": batch_names, "extra": json_values}),
)
batch_bodies = st.one_of(
    st.fixed_dictionaries(
        {"ops": st.lists(good_ops, min_size=1, max_size=8)},
        optional={"extra": json_values},
    ),
    st.fixed_dictionaries({"ops": st.lists(st.one_of(good_ops, bad_ops), max_size=8)}),
    st.fixed_dictionaries({}, optional={"ops": json_values}),
    json_values,
)


def expected_ops(body: Any) -> list[tuple[str, str, int]] | None:
    """(op, name, delta) per op of a valid batch; None if the batch must be refused whole."""
    if not isinstance(body, dict) or set(body) != {"ops"}:
        return None
    ops = body["ops"]
    if not isinstance(ops, list) or not 1 <= len(ops) <= 1000:
        return None
    found = []
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("increment", "get"):
            return None
        allowed = {"op", "name", "delta"} if op["op"] == "increment" else {"op", "name"}
        name = op.get("name")
        if set(op) - allowed or not isinstance(name, str) or not is_name(name):
            return None
        delta = op.get("delta", 1) if op["op"] == "increment" else 0
        if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
            return None
        found.append((op["op"], name, delta))
    return found


@FUZZ
@given(body=batch_bodies)
@example(
    body={
        "ops": [
            {"op": "increment", "name": "b1", "delta": INT64_MAX},
            {"op": "increment", "name": "b1", "delta": INT64_MAX},
            {"op": "get", "name": "b1"},
        ]
    }
)
@example(
    body={
        "ops": [
            {"op": "increment", "name": "b1", "delta": delta}
            for delta in [INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, 1, -1]
        ]
    }
)
@example(body={"ops": [{"op": "increment", "name": "b2"}, {"op": "get", "name": "b2", "delta": 1}]})
@example(body={"ops": [{"op": "increment", "name": "b2", "delta": False}]})
def test_batch_bodies_apply_exactly_or_change_nothing(node: Node, body: Any):
    client = Client(node, "batches")
    ns = f"batches-{next(fresh)}"
    reply = client.call("POST", f"/v1/namespaces/{ns}/batch", encode(body))
    counters = {name: Counter() for name in BATCH_NAMES}
    ops = expected_ops(body)
    if ops is None:
        assert_problem(reply, 400, "invalid-body", "invalid-name", "invalid-delta")
    else:
        assert reply.status == 200, (body, reply)
        results = reply.body["results"]
        assert [(r["op"], r["name"]) for r in results] == [(op, name) for op, name, _ in ops]
        # Ops apply in order; one the node must refuse is refused on its own.
        for (op, name, delta), result in zip(ops, results, strict=True):
            if op == "increment" and not counters[name].add(delta):
                assert result["error"]["type"].endswith("/overflow"), result
            else:
                assert "error" not in result, result
    assert {name: client.value(ns, name) for name in BATCH_NAMES} == {
        name: counter.value for name, counter in counters.items()
    }


# Header values as http.client sends them (latin-1, no CR/LF); control characters are left
# out: aiohttp's parser refuses those before the app sees them (400 text/plain).
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=210,
) | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=195)


@FUZZ
@given(key=header_values)
@example(key="")
@example(key="  ")
@example(key=" retry-1 ")
@example(key="x" * 200)
@example(key="x" * 201)
@example(key="K#0")  # a batch's op's receipt id: refused (validation.IDEMPOTENCY_KEY)
def test_idempotency_keys_apply_once_or_are_refused(node: Node, key: str):
    client = Client(node, f"idem-{next(fresh)}")  # keys are per tenant: a fresh one each
    path = "/v1/namespaces/idem/counters/c/increment"
    replies = [client.call("POST", path, b'{"delta": 3}', Idempotency_Key=key) for _ in "ab"]
    stripped = key.strip(" \t")  # HTTP drops whitespace around a header value
    if 1 <= len(stripped) <= 200 and all("!" <= c <= "~" and c != "#" for c in stripped):
        assert [(r.status, r.body["value"]) for r in replies] == [(200, 3)] * 2, replies
        assert client.value("idem", "c") == 3
    else:  # an empty key too: the client meant its retries to apply once
        for reply in replies:
            assert_problem(reply, 400, "invalid-body")
        assert client.value("idem", "c") == 0

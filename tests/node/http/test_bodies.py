"""The msgspec Structs accept exactly the bodies the field-by-field checks accept, with the
same meaning, and a refused body gets the problem those checks name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from node.base.errors import ClientError
from node.http import bodies, validation

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.sampled_from([INT64_MAX, INT64_MIN, INT64_MAX + 1, INT64_MIN - 1, 2**70]),
    st.floats(allow_nan=False),
    st.sampled_from([1.0, -0.0, 3.0]),
    st.sampled_from(["n1", "a..b", ".", "", "a\n", "x" * 201, "1", "increment", "get"]),
)


def render(value: Any) -> str:
    """JSON text; an object given as a list of (key, value) pairs may repeat a key."""
    if isinstance(value, tuple) and value[:1] == ("obj",):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value[1]) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item) for item in value) + "]"
    return json.dumps(value)


def objects(fields: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[Any]:
    return st.lists(fields, max_size=5).map(lambda pairs: ("obj", pairs))


op_fields = st.one_of(
    st.tuples(st.sampled_from(["op"]), st.sampled_from(["increment", "get", "reset", 1])),
    st.tuples(st.sampled_from(["name"]), scalars),
    st.tuples(st.sampled_from(["delta"]), scalars),
    st.tuples(st.sampled_from(["extra", "Delta"]), scalars),
)
ops = st.one_of(objects(op_fields), scalars)
good_ops = st.one_of(
    st.builds(lambda name: ("obj", [("op", "get"), ("name", name)]), st.sampled_from(["a", "b"])),
    st.builds(
        lambda name, delta: ("obj", [("op", "increment"), ("name", name), ("delta", delta)]),
        st.sampled_from(["a", "b"]),
        st.integers(INT64_MIN, INT64_MAX),
    ),
    st.builds(lambda name: ("obj", [("name", name), ("op", "increment")]), st.just("a")),
)
batch_fields = st.one_of(
    st.tuples(st.just("ops"), st.lists(st.one_of(good_ops, ops), max_size=4)),
    st.tuples(st.just("ops"), st.lists(good_ops, min_size=1, max_size=4)),
    st.tuples(st.sampled_from(["ops", "extra"]), scalars),
)
batch_bodies = st.one_of(
    objects(batch_fields).map(render),
    st.lists(good_ops, min_size=1, max_size=4).map(lambda ops: render(("obj", [("ops", ops)]))),
    st.lists(ops, max_size=2).map(render),
).map(str.encode)
increment_bodies = st.one_of(
    objects(st.tuples(st.sampled_from(["delta", "delta", "extra"]), scalars)).map(render),
    scalars.map(render),
    st.sampled_from(["", "  ", "{", "NaN", '{"delta": NaN}', '{"delta": Infinity}']),
).map(str.encode)


def outcome(parse: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        found = parse(raw)
    except ClientError as error:
        return ("refused", error.type, str(error))
    return ("accepted", bodies.as_json(found) if isinstance(found, bodies.Batch) else found)


def checked_only(raw: bytes) -> Any:
    """The body as the client sent it, once the field checks pass: as_json of the Batch
    must give it back, since an idempotency fingerprint is of the body as sent."""
    body = validation.parse_object(raw, empty_ok=False)
    bodies.checked_batch(body)
    return body


def delta_checked_only(raw: bytes) -> int:
    body = validation.parse_object(raw, empty_ok=True)
    validation.only_fields(body, {"delta"})
    return validation.delta(body.get("delta", 1))


@given(batch_bodies)
@example(b'{"ops":[{"op":"get","name":"a","delta":1}]}')
@example(b'{"ops":[{"name":"a","op":"get","op":"increment","delta":1}]}')
@example(b'{"ops":[{"op":"increment","name":"a","delta":"x","delta":2}]}')
@example(b'{"ops":[{"op":"get","name":"a"}],"ops":[]}')
@example(b'{"ops":[{"op":"increment","name":"a\\n"}]}')
@example(b'{"ops":[{"op":"increment","name":"a\xed\xa0\x80"}]}')
@example(b'\xef\xbb\xbf{"ops":[{"op":"get","name":"a"}]}')
@example('{"ops":[{"op":"get","name":"a"}]}'.encode("utf-16"))
def test_a_batch_means_what_the_field_checks_say(raw: bytes):
    assert outcome(bodies.batch, raw) == outcome(checked_only, raw)


@given(increment_bodies)
@example(b'{"delta": 1, "delta": "1"}')
@example(b'{"delta": "1", "delta": 1}')
@example(b'{"delta": 3.0}')
@example(b'{"delta": true}')
@example(b'{"delta": 9223372036854775808}')
def test_an_increment_means_what_the_field_checks_say(raw: bytes):
    assert outcome(bodies.increment_delta, raw) == outcome(delta_checked_only, raw)


def test_a_good_body_is_decoded_by_the_structs_alone(monkeypatch: pytest.MonkeyPatch):
    def refuse(raw: bytes, *, empty_ok: bool) -> dict[str, Any]:
        raise AssertionError("the Python checks ran for a good body")

    monkeypatch.setattr(validation, "parse_object", refuse)
    ops = [{"op": "increment", "name": f"c{i}", "delta": i} for i in range(100)]
    raw = json.dumps({"ops": [*ops, {"op": "get", "name": "c0"}, {"op": "increment", "name": "x"}]})
    found = bodies.batch(raw.encode())
    assert [op.name for op in found.ops][-3:] == ["c99", "c0", "x"]
    assert bodies.increment_delta(b'{"delta": -7}') == -7


def test_a_bad_name_in_a_well_formed_batch_is_refused():
    with pytest.raises(ClientError, match="name must be 1-200 characters"):
        bodies.batch(b'{"ops":[{"op":"get","name":"a"},{"op":"get","name":"a..b"}]}')


def test_replies_are_compact_utf8_json():
    response = bodies.json_response({"name": "café", "value": INT64_MIN}, status=202)
    assert response.status == 202
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert response.body == '{"name":"café","value":-9223372036854775808}'.encode()

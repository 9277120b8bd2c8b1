"""A stored key's text (durable.member) is json.dumps's, byte for byte: the durable replicas
already hold keys written that way, so a key must name the same row or Redis hash after the
fast path as before it."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from node.storage.durable import member

# names reach the store only after validation, but a stored key must survive any string
part = st.text(min_size=1, max_size=12)


@given(part, part, part)
@example("t", "ns", 'a"b')
@example("t", "ns", "a\\b")
@example("t", "ns", "a\x00\x1f\x7f")
@example("t", "ns", "\u2028\ud800é😀")
def test_member_is_the_json_text_of_the_key(tenant: str, namespace: str, name: str) -> None:
    key = (tenant, namespace, name)
    assert member(key) == json.dumps(key, separators=(",", ":"), ensure_ascii=False)

"""The name rule /openapi.json publishes is the one the node enforces."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from node.base.errors import InvalidName
from node.http import validation
from node.http.openapi import NAME


def accepted(text: str) -> bool:
    try:
        validation.name(text)
    except InvalidName:
        return False
    return True


def published(text: str) -> bool:
    return (
        NAME["minLength"] <= len(text) <= NAME["maxLength"]
        and re.fullmatch(NAME["pattern"], text) is not None
    )


@given(st.text(alphabet="aZ09._:-/ \n\u0430", max_size=12) | st.text(alphabet="a.", max_size=205))
@example(".")
@example("..")
@example(".a.")
@example("a\n")
@example("x" * 200)
@example("x" * 201)
def test_the_published_name_pattern_is_the_enforced_one(text: str):
    assert accepted(text) == published(text)

"""Hypothesis strategies for crdt values (named so it cannot clash with other test dirs)."""

from __future__ import annotations

from hypothesis import strategies as st

from crdt.gcounter import GCounter
from crdt.pncounter import PNCounter

# A few fixed actors make slots collide often, which is where merge logic matters.
ACTOR_IDS = ("a", "b", "c", "node-1:7", "é☃")
actors = st.sampled_from(ACTOR_IDS)

# Any valid wire actor: 1..64 characters is always within 256 UTF-8 bytes.
wire_actors = st.text(min_size=1, max_size=64)
key_parts = st.text(min_size=1, max_size=24)
counter_keys = st.tuples(key_parts, key_parts, key_parts)

# Small enough that no sum of drawn slots leaves int64; edge cases are tested separately.
SMALL_COUNT = 2**40


def gcounters(
    max_count: int = SMALL_COUNT, actor_ids: st.SearchStrategy[str] = actors
) -> st.SearchStrategy[GCounter]:
    return st.dictionaries(actor_ids, st.integers(1, max_count), max_size=5).map(GCounter)


def pncounters(
    max_count: int = SMALL_COUNT, actor_ids: st.SearchStrategy[str] = actors
) -> st.SearchStrategy[PNCounter]:
    return st.builds(PNCounter, gcounters(max_count, actor_ids), gcounters(max_count, actor_ids))


def batches() -> st.SearchStrategy[list[tuple[tuple[str, str, str], PNCounter]]]:
    return st.lists(st.tuples(counter_keys, pncounters(actor_ids=wire_actors)), max_size=8)

"""refuse_unheld: a replica write for a shard this node does not hold is refused whole;
otherwise it answers the keys' shards, in order, so the merges need not hash them again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from node.cluster.handoff import NOT_HELD, ShardNotHeld, refuse_unheld

KEYS = [("t", "ns", "a"), ("t", "ns", "bb"), ("t", "ns", "c"), ("t", "ns", "a")]


def _cluster(held: set[int], asked: list[int]) -> Any:
    def holds(shard: int) -> bool:
        asked.append(shard)
        return shard in held

    return SimpleNamespace(
        node_id="n1",
        holds=holds,
        shard_of=lambda key: len(key[2]),
        state=SimpleNamespace(current=SimpleNamespace(epoch=3)),
    )


def test_held_keys_answer_their_shards_in_order_asking_once_per_shard():
    asked: list[int] = []
    assert refuse_unheld(_cluster({1, 2}, asked), KEYS) == [1, 2, 1, 1]
    assert sorted(asked) == [1, 2]


def test_one_unheld_key_refuses_the_whole_write():
    with pytest.raises(ShardNotHeld, match=NOT_HELD) as raised:
        refuse_unheld(_cluster({1}, []), KEYS)
    assert "[2]" in str(raised.value)

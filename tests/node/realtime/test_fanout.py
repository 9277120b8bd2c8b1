"""The fan-out (node/realtime/fanout.py) over fake nodes: one request per node, a refused or
failed shard moves to its next replica, a window no replica observed whole is answered by
the one that observed it longest and marked incomplete, and no replica at all is a 503."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from node.base.errors import PeerError, QuorumUnavailable
from node.cluster.wire import ProtocolError
from node.realtime.fanout import Fanout, Result, _merge
from node.realtime.query import Answer, Kind, Query, answer_from_wire, query_from_wire
from node.realtime.service import NOT_HELD
from node.realtime.windows import MINUTE_MS, window_start_ms

SHARDS = 4
NOW = 1_000 * MINUTE_MS
START = window_start_ms(NOW, 15)


@dataclass
class FakeNode:
    """Answers for the shards it observes: since (ms) per shard; counts 1 per shard done."""

    since: dict[int, int]
    down: bool = False
    asked: list[tuple[tuple[int, ...], bool]] = field(default_factory=list)

    async def prepare(self, query: Query) -> None:
        pass

    def answer(self, query: Query) -> Answer:
        self.asked.append((query.shards, query.strict))
        answer = Answer()
        for shard in query.shards:
            since = self.since.get(shard)
            if since is None:
                answer.refused[shard] = NOT_HELD
            elif query.strict and since > START:
                answer.refused[shard] = since
            else:
                answer.done.append(shard)
                answer.counters += 1
                answer.since_ms = max(answer.since_ms, since)
        return answer


class FakeLink:
    def __init__(self, node: FakeNode) -> None:
        self.node = node

    async def call(self, kind: int, body: Any, timeout: float) -> Any:
        if self.node.down:
            raise PeerError("down")
        return self.node.answer(query_from_wire(body, SHARDS)).to_wire()


class FakeConfig:
    request_timeout_s = 1.0


class FakeCluster:
    node_id = "a"
    ready = True
    config = FakeConfig()

    def __init__(self, table: dict[int, tuple[str, ...]]) -> None:
        self.table = table

    def replicas(self, shard: int) -> tuple[str, ...]:
        return self.table[shard]

    def alive(self, node_id: str) -> bool:
        return True

    def address_of(self, node_id: str) -> str:
        return node_id


class FakePool:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes

    def link(self, address: str) -> FakeLink:
        return FakeLink(self.nodes[address])


def fanout(nodes: dict[str, FakeNode], table: dict[int, tuple[str, ...]]) -> Fanout:
    return Fanout(FakeCluster(table), FakePool(nodes), nodes["a"])  # type: ignore[arg-type]


def run(out: Fanout, span: int = 15) -> Any:
    query = Query(Kind.AGGREGATE, "t", "ns", span_min=span, at_ms=NOW)
    return asyncio.run(out.run(query, list(range(SHARDS))))


TABLE = {0: ("a", "b", "c"), 1: ("b", "c", "a"), 2: ("c", "a", "b"), 3: ("b", "c", "a")}


def test_local_first_then_one_request_per_node() -> None:
    nodes = {n: FakeNode(dict.fromkeys(range(SHARDS), 0)) for n in "abc"}
    result = run(fanout(nodes, TABLE))
    assert (result.counters, result.complete) == (SHARDS, True)
    assert nodes["a"].asked == [((0, 1, 2, 3), True)] and not nodes["b"].asked


def test_a_restarted_replica_refuses_and_the_next_one_answers() -> None:
    restarted = dict.fromkeys(range(SHARDS), NOW - MINUTE_MS)  # a began observing a minute ago
    nodes = {"a": FakeNode(restarted), "b": FakeNode({0: 0, 1: 0, 3: 0}), "c": FakeNode({2: 0})}
    result = run(fanout(nodes, TABLE))
    assert (result.counters, result.complete) == (SHARDS, True)
    assert nodes["b"].asked == [((0, 1, 3), True)]  # shards 0, 1, 3 next at b, 2 at c
    assert nodes["c"].asked == [((2,), True)]


def test_no_replica_observed_the_window_whole_the_longest_one_answers_it() -> None:
    nodes = {
        "a": FakeNode(dict.fromkeys(range(SHARDS), NOW - 2 * MINUTE_MS)),
        "b": FakeNode(dict.fromkeys(range(SHARDS), NOW - 5 * MINUTE_MS)),
        "c": FakeNode(dict.fromkeys(range(SHARDS), NOW - 3 * MINUTE_MS)),
    }
    result = run(fanout(nodes, TABLE))
    assert result.counters == SHARDS and not result.complete
    assert result.since_ms == NOW - 5 * MINUTE_MS
    assert nodes["b"].asked[-1] == ((0, 1, 2, 3), False)


def test_a_failed_node_s_shards_move_on_and_none_left_is_unavailable() -> None:
    nodes = {n: FakeNode(dict.fromkeys(range(SHARDS), 0)) for n in "abc"}
    nodes["b"].down = True
    table = {0: ("b", "c"), 1: ("b", "c"), 2: ("c", "b"), 3: ("b", "c")}
    result = run(fanout(nodes, table), span=0)
    assert result.counters == SHARDS and nodes["c"].asked[-1] == ((0, 1, 3), False)
    nodes["c"].down = True
    with pytest.raises(QuorumUnavailable):
        run(fanout(nodes, table), span=0)


def test_answers_merge_exactly() -> None:
    one = Answer([0], {}, 2, 10, 3, [("x", 5, 1), ("y", 4, 2)], 0)
    two = Answer([1], {}, 1, 7, 9, [("z", 5, 9)], 0)
    assert answer_from_wire(one.to_wire()) == one
    merged = _merge(Query(Kind.TOP, "t", "ns", k=2), [one, two], Result())
    assert (merged.counters, merged.total, merged.change) == (3, 17, 12)
    assert merged.top == [("x", 5, 1), ("z", 5, 9)]  # by value, ties by name


def test_an_answer_from_a_node_before_or_after_this_version_is_read() -> None:
    """A rolling upgrade: a node before the window file answers 8 fields (no restore gaps),
    one before `seen` 9, a later one may add fields; all are read, and a shorter or
    malformed answer is not."""
    answer = Answer([0], {}, 2, 10, 3, [("x", 5, 1)], 0)
    answer.gaps = [(5, 7)]
    answer.seen = 4
    wire = answer.to_wire()
    assert len(wire) == 10 and answer_from_wire(wire) == answer
    older = answer_from_wire(wire[:8])
    assert older.gaps == [] and (older.counters, older.total, older.top) == (2, 10, [("x", 5, 1)])
    assert older.seen is None and answer_from_wire(wire[:9]).gaps == [(5, 7)]
    assert answer_from_wire([*wire, "a later field"]) == answer
    with pytest.raises(ProtocolError):
        answer_from_wire(wire[:7])
    with pytest.raises(ProtocolError):
        answer_from_wire([*wire[:8], [[5]]])  # a gap is [low, high]

"""A real-time query and a node's answer to it, as typed values and as REALTIME peer bodies.

One query asks a node about some of its shards: a counter's windowed change (WINDOW), a
namespace's aggregate under a prefix (AGGREGATE) or its top k (TOP). `strict` asks the node
to answer only for shards whose changes it has observed since before the window began, and
to refuse the others with the time it began observing them, so the asker tries another
replica. Bodies are validated whole before anything is answered: a malformed one raises
ProtocolError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from node.cluster.wire import ProtocolError
from node.realtime.windows import MAX_SPAN_MIN

MAX_K = 1000
MAX_PART_CHARS = 256
INT64 = 1 << 63


class Kind(enum.StrEnum):
    WINDOW = "window"
    AGGREGATE = "aggregate"
    TOP = "top"
    BUCKETS = "buckets"  # a shard's window buckets before the asker's cut (buckets.py)


class By(enum.StrEnum):
    VALUE = "value"
    CHANGE = "change"


@dataclass(frozen=True)
class Query:
    kind: Kind
    tenant: str
    namespace: str
    prefix: str = ""  # AGGREGATE, TOP
    name: str = ""  # WINDOW
    span_min: int = 0  # 0: no window
    by: By = By.VALUE
    k: int = 10
    at_ms: int = 0  # when the asker read the clock: every node sums the same minutes
    shards: tuple[int, ...] = ()
    strict: bool = False

    def to(self, shards: list[int], strict: bool) -> Query:
        return replace(self, shards=tuple(shards), strict=strict)

    def to_wire(self) -> list[Any]:
        return [
            self.kind.value, self.tenant, self.namespace, self.prefix, self.name,
            self.span_min, self.by.value, self.k, self.at_ms, list(self.shards), self.strict,
        ]  # fmt: skip


def query_from_wire(obj: object, shard_count: int) -> Query:
    if not isinstance(obj, list) or len(obj) != 11:
        raise ProtocolError("a realtime query is a list of 11")
    kind, tenant, namespace, prefix, name, span, by, k, at_ms, shards, strict = obj
    for part in (tenant, namespace, prefix, name):
        if not isinstance(part, str) or len(part) > MAX_PART_CHARS:
            raise ProtocolError("bad realtime query strings")
    if kind not in Kind.__members__.values() or by not in By.__members__.values():
        raise ProtocolError("bad realtime query kind")
    if type(span) is not int or not 0 <= span <= MAX_SPAN_MIN:
        raise ProtocolError("bad realtime window span")
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise ProtocolError("bad realtime k")
    if type(at_ms) is not int or at_ms < 0 or type(strict) is not bool:
        raise ProtocolError("bad realtime query time or flag")
    if not isinstance(shards, list) or not all(
        type(s) is int and 0 <= s < shard_count for s in shards
    ):
        raise ProtocolError("bad realtime shards")
    return Query(
        Kind(kind), tenant, namespace, prefix, name, span, By(by), k, at_ms, tuple(shards), strict
    )


@dataclass
class Answer:
    """A node's part: the shards it answered for and its sums and top over them; the shards
    it refused, each with since when it observes it (-1: it does not hold it)."""

    done: list[int] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    counters: int = 0
    total: int = 0
    change: int = 0
    top: list[tuple[str, int, int | None]] = field(default_factory=list)  # name, value, change
    since_ms: int = 0  # the latest observation start among the shards done
    buckets: list[Any] | None = None  # BUCKETS: the shard's buckets, wire form (buckets.py)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # BUCKETS: coverage.py's gaps
    # WINDOW: the counter's value as this node's windows count up to (the change tap's last
    # hand-on), so the reader can add what its own read of the value holds beyond it
    seen: int | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.done,
            [[shard, since] for shard, since in self.refused.items()],
            self.counters,
            _big(self.total),
            _big(self.change),
            [[name, _big(value), None if change is None else _big(change)]
             for name, value, change in self.top],
            self.since_ms,
            self.buckets,
            [list(gap) for gap in self.gaps],
            None if self.seen is None else _big(self.seen),
        ]  # fmt: skip


def _big(number: int) -> int | str:
    """A sum may leave int64 (msgpack's range): then it travels as a decimal string."""
    return number if -INT64 <= number < INT64 else str(number)


def _int(obj: object) -> int:
    if type(obj) is int:
        return obj
    if isinstance(obj, str) and len(obj) <= 40:
        try:
            return int(obj)
        except ValueError:
            pass
    raise ProtocolError("bad realtime number")


def answer_from_wire(obj: object) -> Answer:
    # 8 fields from a node before the window file (no gaps: it never restored one), 9 from
    # one before `seen`, more from a later one (fields it added are left alone): a rolling
    # upgrade keeps answering
    if not isinstance(obj, list) or len(obj) < 8:
        raise ProtocolError("a realtime answer is a list of at least 8")
    done, refused, counters, total, change, top, since, buckets = obj[:8]
    gaps = obj[8] if len(obj) > 8 else []
    seen = obj[9] if len(obj) > 9 else None
    if not isinstance(done, list) or not all(type(s) is int for s in done):
        raise ProtocolError("bad realtime shards done")
    if not isinstance(refused, list) or not isinstance(top, list):
        raise ProtocolError("bad realtime answer")
    if buckets is not None and not isinstance(buckets, list):
        raise ProtocolError("bad realtime buckets")  # buckets.parse checks the rest
    if not isinstance(gaps, list) or not all(
        isinstance(gap, list) and len(gap) == 2 and all(type(m) is int for m in gap) for gap in gaps
    ):
        raise ProtocolError("bad realtime gaps")
    answer = Answer(done, {}, _int(counters), _int(total), _int(change), [], _int(since), buckets)
    answer.gaps = [(low, high) for low, high in gaps]
    answer.seen = None if seen is None else _int(seen)
    for item in refused:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("bad realtime refusal")
        answer.refused[_int(item[0])] = _int(item[1])
    for item in top:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str):
            raise ProtocolError("bad realtime top entry")
        answer.top.append((item[0], _int(item[1]), None if item[2] is None else _int(item[2])))
    return answer

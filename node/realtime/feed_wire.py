"""The EVENTS peer message (kind 14): "events of tenant/namespace/prefix after seq s".

Request body: [tenant, namespace, prefix, after, limit]. Reply: [floor, upto, [[seq, name,
value, change, at_ms, replayed, version], ...]] (feed_log.Read; a version is a uint64). A
value or change past msgpack's range (a value merged past int64, a swing from INT64_MAX to
INT64_MIN) is a decimal string (bigints.py). Both sides validate before use and raise
ProtocolError, so a malformed message never reaches the log or a client.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from node.cluster.wire import ProtocolError
from node.realtime.bigints import from_wire, to_wire
from node.realtime.feed_log import Event, Read

MAX_READ = 5000
INT64 = 1 << 63
UINT64 = 1 << 64


class EventsAsk(NamedTuple):
    tenant: str
    namespace: str
    prefix: str
    after: int
    limit: int


def _int(obj: object, low: int = -INT64, high: int = INT64) -> int:
    if type(obj) is not int or not low <= obj < high:
        raise ProtocolError("an events message holds a bad integer")
    return obj


def _text(obj: object, empty_ok: bool = False) -> str:
    if type(obj) is not str or len(obj) > 256 or (not obj and not empty_ok):
        raise ProtocolError("an events message holds a bad string")
    return obj


def ask_to_wire(ask: EventsAsk) -> list[Any]:
    return list(ask)


def ask_from_wire(obj: object) -> EventsAsk:
    if not isinstance(obj, list) or len(obj) != 5:
        raise ProtocolError("an events request is [tenant, namespace, prefix, after, limit]")
    tenant, namespace, prefix, after, limit = obj
    return EventsAsk(
        _text(tenant),
        _text(namespace),
        _text(prefix, True),
        _int(after, -1),
        _int(limit, 1, MAX_READ + 1),
    )


def read_to_wire(read: Read) -> list[Any]:
    # versions fit a uint64: the log files a larger one as its cap (feed_log.MAX_VERSION)
    events = [
        [e.seq, e.name, to_wire(e.value), to_wire(e.change), e.at_ms, e.replayed, e.version]
        for e in read.events
    ]
    return [read.floor, read.upto, events]


def read_from_wire(obj: object, tenant: str, namespace: str) -> Read:
    if not isinstance(obj, list) or len(obj) != 3 or not isinstance(obj[2], list):
        raise ProtocolError("an events reply is [floor, upto, [event, ...]]")
    events = []
    for item in obj[2]:
        if not isinstance(item, list) or len(item) != 7 or type(item[5]) is not bool:
            raise ProtocolError("an event is [seq, name, value, change, at_ms, replayed, version]")
        seq, name, value, change, at_ms, replayed, version = item
        events.append(
            Event(
                _int(seq, 0),
                tenant,
                namespace,
                _text(name),
                from_wire(value),
                from_wire(change),
                _int(at_ms, 0),
                replayed,
                _int(version, 0, UINT64),
            )
        )
    return Read(_int(obj[0], 0), _int(obj[1], 0), events)

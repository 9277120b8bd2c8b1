"""Window catch-up: a replica that began observing a shard late (restarted, or gained it in a
hand-off) takes the older minutes of its windows from a replica that observed them.

A node observes a shard live from a minute boundary on (`since`, observing.py; for a shard
restored from the window file, the restore's cut: `Observation.live_cut`): every change of
a minute from then on reached its own buckets; those before may also hold what its
recovery merged, or a restore's tail. That boundary is the cut: every change before it
reached the other replica's buckets as the other's observation says (coverage.py). So once
the clock is past the cut (plus the replication delay), this node replaces its buckets
before the cut by the other's and from then on observes the shard as the other does: no
change is counted twice (its own pre-cut buckets, recovery merges included, are dropped)
and none is missed. It does so only when the other's observation answers strictly more
windows and no gap of the other's ends after the cut (coverage.better). A rolling restart
thus leaves windows complete, and a restart of every node too, with window files
(window_persist.py); without them it loses what came before (fanout.py says so).

The wire form of a shard's buckets: [[tenant, namespace, [[minute, [name, delta, name,
delta, ...]], ...]], ...], at most MAX_ENTRIES (counter, minute) entries: a replica whose
shard holds more answers none, and the asker stays incomplete for the older windows. A delta
past msgpack's range (a minute's swing from INT64_MAX to INT64_MIN nets -(2^64 - 1)) is a
decimal string (bigints.py). Names are interned as they are parsed, as windows.py interns
those it is handed: one string per name across the minutes taken and those observed after.
"""

from __future__ import annotations

from sys import intern
from typing import Any

from node.cluster.wire import ProtocolError
from node.realtime.bigints import from_wire, to_wire
from node.realtime.windows import Space, Windows

MAX_ENTRIES = 250_000  # (counter, minute) entries one shard's catch-up carries, ~5 MB
SETTLE_MS = 2_000  # past the cut, for the other replica's last pre-cut changes to land

Buckets = dict[Space, list[tuple[int, dict[str, int]]]]  # oldest first


def export(windows: Windows, shard: int, since: int, before: int) -> list[Any] | None:
    """A shard's buckets of minutes `since` to `before` (those before since may hold what
    this node's own recovery merged), in wire form; None when too many."""
    out: list[Any] = []
    entries = 0
    for (tenant, namespace), window in windows.spaces(shard):
        minutes = []
        for minute, bucket in zip(window.minutes, window.deltas, strict=True):
            if minute < since:
                continue
            if minute >= before:
                break
            entries += len(bucket)
            flat = [x for name, delta in bucket.items() for x in (name, to_wire(delta))]
            minutes.append([minute, flat])
        if minutes:
            out.append([tenant, namespace, minutes])
    return None if entries > MAX_ENTRIES else out


def parse(obj: object, before: int) -> Buckets:
    """The wire form validated whole; ProtocolError when malformed."""
    if not isinstance(obj, list):
        raise ProtocolError("window buckets are a list")
    out: Buckets = {}
    entries = 0
    for space in obj:
        if not isinstance(space, list) or len(space) != 3:
            raise ProtocolError("a namespace's buckets are [tenant, namespace, minutes]")
        tenant, namespace, minutes = space
        if not isinstance(tenant, str) or not isinstance(namespace, str):
            raise ProtocolError("bad bucket namespace")
        if not isinstance(minutes, list):
            raise ProtocolError("bad bucket minutes")
        parsed = out.setdefault((tenant, namespace), [])
        for item in minutes:
            if not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int:
                raise ProtocolError("a bucket is [minute, [name, delta, ...]]")
            minute, flat = item
            if minute >= before or (parsed and minute <= parsed[-1][0]):
                raise ProtocolError("bucket minutes out of order or past the cut")
            if not isinstance(flat, list) or len(flat) % 2:
                raise ProtocolError("bad bucket deltas")
            names, deltas = flat[0::2], flat[1::2]
            if not all(isinstance(n, str) for n in names):
                raise ProtocolError("bad bucket deltas")
            if not all(type(d) is int for d in deltas):
                deltas = [from_wire(d) for d in deltas]  # rare: one past msgpack's range
            entries += len(names)
            parsed.append((minute, dict(zip(map(intern, names), deltas, strict=True))))
    if entries > MAX_ENTRIES:
        raise ProtocolError("too many bucket entries")
    return out


def adopt(windows: Windows, shard: int, before: int, theirs: Buckets) -> None:
    """Replace the shard's buckets of minutes before `before` by theirs."""
    ours = dict(windows.spaces(shard))
    for space in ours.keys() | theirs.keys():
        window = ours.get(space)
        if window is None:
            window = windows.window(shard, space)
        keep = [
            (minute, bucket)
            for minute, bucket in zip(window.minutes, window.deltas, strict=True)
            if minute >= before
        ]
        merged = theirs.get(space, []) + keep
        window.minutes = [minute for minute, _ in merged]
        window.deltas = [bucket for _, bucket in merged]
        window.totals = [sum(bucket.values()) for bucket in window.deltas]
        window.rankings.clear()  # made again by the next query, from the new buckets
        if not window.minutes:
            windows.forget(shard, space)

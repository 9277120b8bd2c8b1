"""Typed results of the real-time reads (a counter's window, aggregates, top-k) and of the
change feed's events, built from the node's JSON. Pure: no I/O.

A window the cluster did not observe whole (it restarted within it) is answered anyway,
with `complete=False` and `observed_since_ms`: changes before that time are missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Windowed:
    """A counter's value and its net change over a trailing window (GET ...?window=)."""

    value: int
    change: int
    rate_per_s: float
    span: str
    complete: bool = True
    observed_since_ms: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Windowed:
        window = body["window"]
        return cls(
            value=int(body["value"]),
            change=int(window["change"]),
            rate_per_s=float(window["rate_per_s"]),
            span=str(window["span"]),
            complete=bool(window.get("complete", True)),
            observed_since_ms=window.get("observed_since_ms"),
        )


@dataclass(frozen=True)
class Aggregate:
    """How many counters are under a prefix, their total and (with a window) their change."""

    namespace: str
    prefix: str
    counters: int
    total: int
    change: int | None = None  # with a window only
    span: str | None = None
    complete: bool = True
    observed_since_ms: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Aggregate:
        window = body.get("window") or {}
        return cls(
            namespace=str(body["namespace"]),
            prefix=str(body["prefix"]),
            counters=int(body["counters"]),
            total=int(body["total"]),
            change=int(window["change"]) if "change" in window else None,
            span=window.get("span"),
            complete=bool(body.get("complete", True)),
            observed_since_ms=body.get("observed_since_ms"),
        )


@dataclass(frozen=True)
class TopEntry:
    name: str
    value: int  # saturated to int64 by the node
    change: int | None = None  # with a window only


@dataclass(frozen=True)
class Top:
    """The k counters with the largest value or windowed change, largest first."""

    namespace: str
    prefix: str
    by: str
    entries: tuple[TopEntry, ...]
    span: str | None = None
    complete: bool = True
    observed_since_ms: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Top:
        window = body.get("window") or {}
        entries = tuple(
            TopEntry(str(e["name"]), int(e["value"]), e.get("change")) for e in body["top"]
        )
        return cls(
            namespace=str(body["namespace"]),
            prefix=str(body["prefix"]),
            by=str(body["by"]),
            entries=entries,
            span=window.get("span"),
            complete=bool(body.get("complete", True)),
            observed_since_ms=body.get("observed_since_ms"),
        )

    def as_dict(self) -> dict[str, int]:
        """{name: value}, largest first."""
        return {entry.name: entry.value for entry in self.entries}


@dataclass(frozen=True)
class ChangeEvent:
    """One change of the feed: the counter's value after it, the net change since the
    counter's previous event, when it was published, and the event's id (its position in
    every node's log: a resume point). `replayed` events were republished by a shard's new
    coordinator with the current value; their `change` may repeat one already seen, so a
    consumer that sums changes takes `value` from them. `version` orders a counter's states
    (the sum of its slots' lifetime totals: it grows with every write, a decrement included);
    None from a node that does not send it."""

    name: str
    value: int
    change: int
    at: datetime
    id: str
    replayed: bool = False
    version: int | None = None


@dataclass(frozen=True)
class Gap:
    """The feed could not resume where asked: `node`'s log no longer holds the events after
    `after` (retention ran out, or the node restarted). The stream goes on from the oldest
    event held; re-read the counters you follow."""

    node: str
    after: int
    oldest_held_after: int


FeedItem = ChangeEvent | Gap


class BadEvent(ValueError):
    """A frame the client cannot read as the feed's (a bug on one side, not the network)."""


def change_event(data: str, event_id: str | None) -> ChangeEvent:
    try:
        body = json.loads(data)
        return ChangeEvent(
            name=str(body["name"]),
            value=int(body["value"]),
            change=int(body["change"]),
            at=datetime.fromisoformat(str(body["at"])),
            id=event_id or "",
            replayed=bool(body.get("replayed", False)),
            version=None if body.get("version") is None else int(body["version"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise BadEvent(f"a change event's data is not the feed's: {data[:200]!r}") from error


def gap_event(data: str) -> Gap:
    try:
        body = json.loads(data)
        return Gap(str(body["node"]), int(body["after"]), int(body["oldest_held_after"]))
    except (ValueError, KeyError, TypeError) as error:
        raise BadEvent(f"a gap event's data is not the feed's: {data[:200]!r}") from error

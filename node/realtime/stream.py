"""One SSE stream of the change feed: its position in every node's log, and its frames.

A stream starts where every log is now (no Last-Event-ID) or at the position its
Last-Event-ID names, and reads every `poll_s` (feed reader: its own log and each live
member's). Each event goes out as

    id: n1:17592186044431,n2:35184372088840
    event: change
    data: {"name": "views", "value": 42, "change": 3, "at": "2026-12-01T02:00:00.100Z"}

whose id is the stream's position in every log once that event is sent, so a client that
reconnects with it as Last-Event-ID resumes after that event, without a gap, as long as the
logs still hold what follows (their retention, feed_log.py). A stream started at the tail
first sends its position there alone (`id: ...` and no data: that sets the client's last
event id and dispatches nothing), so a client whose stream breaks before the first event
resumes from where it started, not from a later tail. When a log no longer holds what
follows (the client was away too long, or a node restarted and its earlier life's events
are gone), the stream says so with `event: gap` (data: the node, the position asked, the
oldest held) and carries on from the oldest event held; the client should then re-read the
counters it follows. A member absent from the position (joined since, or not reachable when
the id was made) is read from the oldest event it holds: some of those may predate the
stream (at least once, never fewer). Events of several logs read at once go out merged by
time.

Order per counter. A counter's events come from whichever node coordinated its shard when
they were published, and across a hand-over (a join, a leave, a kill -9) two nodes' logs
hold events of it: the new coordinator's replica may lag the old one's (it republishes what
it holds, publisher.py), both may publish for a moment while their views of the ring differ,
and two logs read at once are snapshots taken at slightly different times. So each event
carries its counter's `version` (the sum of its state's slots, crdt/packed.py: it grows with
every change of the state, anywhere, a decrement's included), and a stream never sends an
event whose version is below that of the counter's last event it sent: the values a stream
shows for a counter follow its state's history, never back to an older state (a decrement
is a newer state, so a value may go down; an equal version is the same state, a repeat).
Its `change` is then the change since the last event the stream sent of that counter, so a
stream's changes add up to the value it shows across hand-overs, drops and repeats. A newer
state always comes: the coordinator publishes each change of its replica, which catches up.
A stream remembers the last event of up to REMEMBER_MAX counters, each for REMEMBER_MS
(about 300 B each, so at most 3 MB a stream); a hand-over's stale events come within
seconds. A client that reconnects (Last-Event-ID) starts a stream that remembers nothing:
to keep the order across its reconnects it drops, itself, an event whose `version` is below
the last it took of that counter (as a consumer of the Redis stream must: each node appends
its own events there).

The stream's memory is one read (at most READ_LIMIT events per member) plus what the
transport buffers: a write that cannot finish within `stall_s` (the client stopped
reading) cuts the stream off with a final `event: cutoff`, so a slow consumer costs bounded
memory and is told why it was dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping

from node.base.config import Config
from node.obs.metrics import Histogram
from node.realtime.feed_log import Event, Subject, encode_position, iso_ms
from node.realtime.reader import FeedReader

REMEMBER_MAX = 10_000  # counters whose last event a stream remembers, at most
REMEMBER_MS = 30_000  # ... and for how long after it


def streams_per_tenant(config: Config) -> int:
    """--events-max-streams-per-tenant, its default (0) resolved: a quarter of a node's
    streams with tokens, all of them with --auth none (one tenant)."""
    if config.events_max_streams_per_tenant:
        return config.events_max_streams_per_tenant
    if config.auth == "none":
        return config.events_max_streams
    return max(1, config.events_max_streams // 4)


class StreamTally:
    """What this node's streams did, for the metrics: open, cut off, gaps, events sent."""

    def __init__(self, max_streams: int, per_tenant: int | None = None) -> None:
        self.max_streams = max_streams
        self.per_tenant = max_streams if per_tenant is None else per_tenant
        self.active = 0
        self.by_tenant: dict[str, int] = {}  # open streams per tenant (none: no entry)
        self.opened = 0
        self.cut_off = 0  # slow consumers dropped
        self.gaps = 0
        self.sent = 0
        self.stale = 0  # events not sent: older than one the stream had sent of their counter
        self.lag = Histogram()  # seconds from an event's publication to a stream sending it
        self.closing = asyncio.Event()  # set when the node stops: every stream ends


def change_frame(event: Event, event_id: str, change: int) -> str:
    data: dict[str, object] = {
        "name": event.name,
        "value": event.value,
        "change": change,
        "at": iso_ms(event.at_ms),
        "version": event.version,
    }
    if event.replayed:
        data["replayed"] = True
    return f"id: {event_id}\nevent: change\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def gap_frame(node: str, after: int, floor: int) -> str:
    data = {"node": node, "after": after, "oldest_held_after": floor}
    return f"event: gap\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def cutoff_frame(reason: str) -> str:
    return f"event: cutoff\ndata: {json.dumps({'reason': reason})}\n\n"


class Follower:
    """One stream's position in every node's log and the frames of its next read."""

    def __init__(
        self,
        reader: FeedReader,
        subject: Subject,
        prefix: str,
        position: Mapping[str, int] | None,
        tally: StreamTally,
    ) -> None:
        self.reader = reader
        self.subject = subject
        self.prefix = prefix
        self.position: dict[str, int] = dict(position or {})
        self.tail = position is None  # the first read only finds where every log is
        self.tally = tally
        # name -> (version, value, at_ms) of its last event sent, least recently sent first
        self.last_sent: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def position_frame(self) -> str:
        """A frame of the stream's position alone (empty before the first read found it)."""
        position = encode_position(self.position)
        return f"id: {position}\n\n" if position else ""

    async def next_frames(self) -> list[str]:
        if self.tail:
            reads = await self.reader.read(
                self.subject, self.prefix, {node: -1 for node in self.reader.members()}
            )
            self.position.update((node, read.upto) for node, read in reads.items())
            self.tail = False
            return []
        reads = await self.reader.read(self.subject, self.prefix, self.position)
        frames: list[str] = []
        merged: list[tuple[int, str, Event]] = []
        for node, read in reads.items():
            known = self.position.get(node)
            if known is not None and known < read.floor:
                frames.append(gap_frame(node, known, read.floor))
                self.tally.gaps += 1
            merged += [(event.at_ms, node, event) for event in read.events]
        merged.sort(key=lambda item: item[0])  # stable: each log's own order is kept
        position, observe, now_ms = self.position, self.tally.lag.observe, time.time() * 1000
        last_sent, sent = self.last_sent, 0
        for _, node, event in merged:
            position[node] = event.seq
            last = last_sent.get(event.name)
            if last is None:
                change = event.change
            elif event.version < last[0]:
                self.tally.stale += 1  # an older state than one sent: the value would go back
                continue
            else:
                change = event.value - last[1]
                last_sent.move_to_end(event.name)
            last_sent[event.name] = (event.version, event.value, event.at_ms)
            frames.append(change_frame(event, encode_position(position), change))
            observe(max(0.0, now_ms - event.at_ms) / 1000)
            sent += 1
        if merged:
            self._forget(merged[-1][0] - REMEMBER_MS)
        for node, read in reads.items():
            position[node] = max(position.get(node, 0), read.upto)
        self.tally.sent += sent
        return frames

    def _forget(self, before_ms: int) -> None:
        """Bound what the stream remembers: by count, and by age (a hand-over's stale events
        come within seconds of the newer ones)."""
        last_sent = self.last_sent
        while last_sent and (
            len(last_sent) > REMEMBER_MAX or next(iter(last_sent.values()))[2] < before_ms
        ):
            last_sent.popitem(last=False)

"""One SSE stream of the change feed: its position in every node's log, and its frames.

A stream starts where every log is now (no Last-Event-ID) or at the position its
Last-Event-ID names, and reads every `poll_s` (feed reader: its own log and each live
member's). Each event goes out as

    id: n1:17592186044431,n2:35184372088840
    event: change
    data: {"name": "views", "value": 42, "change": 3, "at": "2026-12-01T02:00:00.100Z"}

whose id is the stream's position in every log once that event is sent, so a client that
reconnects with it as Last-Event-ID resumes after that event, without a gap, as long as the
logs still hold what follows (their retention, feed_log.py). When a log no longer does (the
client was away too long, or a node restarted and its earlier life's events are gone), the
stream says so with `event: gap` (data: the node, the position asked, the oldest held) and
carries on from the oldest event held; the client should then re-read the counters it
follows. A member absent from the position (joined since, or not reachable when the id was
made) is read from the oldest event it holds: some of those may predate the stream (at least
once, never fewer). Events of several logs read at once go out merged by time.

The stream's memory is one read (at most READ_LIMIT events per member) plus what the
transport buffers: a write that cannot finish within `stall_s` (the client stopped
reading) cuts the stream off with a final `event: cutoff`, so a slow consumer costs bounded
memory and is told why it was dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

from node.obs.metrics import Histogram
from node.realtime.feed_log import Event, Subject, encode_position, iso_ms
from node.realtime.reader import FeedReader


class StreamTally:
    """What this node's streams did, for the metrics: open, cut off, gaps, events sent."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.active = 0
        self.opened = 0
        self.cut_off = 0  # slow consumers dropped
        self.gaps = 0
        self.sent = 0
        self.lag = Histogram()  # seconds from an event's publication to a stream sending it
        self.closing = asyncio.Event()  # set when the node stops: every stream ends


def change_frame(event: Event, event_id: str) -> str:
    data: dict[str, object] = {
        "name": event.name,
        "value": event.value,
        "change": event.change,
        "at": iso_ms(event.at_ms),
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
        for _, node, event in merged:
            position[node] = event.seq
            frames.append(change_frame(event, encode_position(position)))
            observe(max(0.0, now_ms - event.at_ms) / 1000)
        for node, read in reads.items():
            position[node] = max(position.get(node, 0), read.upto)
        self.tally.sent += len(merged)
        return frames

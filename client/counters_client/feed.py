"""Feed: the change feed of a namespace as an async iterator that survives node failures.

It streams GET /v1/namespaces/{ns}/events from one node and yields `ChangeEvent`s, and a
`Gap` when a log no longer holds what the stream asked for (realtime.py). When the stream
ends for any reason (the node died or stopped, the connection broke, nothing arrived within
`idle_timeout_s`, or the node cut off a slow reader with `event: cutoff`), it reconnects to
a serving node, avoiding the one that failed, with the last event id it received (of an
event, or of the frame without data by which a stream started at the tail gives its
position) as Last-Event-ID: the node resumes right after it, so the caller sees no gap and
no repeat, even when a stream breaks before its first event.
A node's stream never goes back in a counter's order (each event's `version`), but a new
stream remembers nothing of the old one, and across a coordinator's failover two nodes may
both have published a counter's states: so the feed itself drops an event whose version is
below the last it yielded for that counter (an equal one is the same state, a repeat, and is
yielded), remembering the versions of the last `ORDER_MEMORY` counters it yielded. An event
yielded after one of its counter carries the change since that one's value (a repeat: 0),
whatever the node counted it from (an event dropped, or one another stream sent), so the
changes a caller sums add up to the value.
Opening is retried like other calls (connection errors, 502/503/504 with back-off, 429
after Retry-After) within deadline_s per outage, then DeadlineExceeded; a refusal (4xx)
is raised as its typed error. Streams lost before their first frame make the next opening
wait a growing back-off (with jitter, up to backoff_cap_s); the node's `retry:` hint is
not used, as the client moves to another node anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import OrderedDict, deque
from typing import Any

import aiohttp

from counters_client import errors, retry
from counters_client.realtime import BadEvent, ChangeEvent, FeedItem, change_event, gap_event
from counters_client.sse import Frame, Parser
from counters_client.transport import Transport, _json

log = logging.getLogger("counters_client")
IDLE_TIMEOUT_S = 45.0  # three of the node's default heartbeats (15 s)
ORDER_MEMORY = 100_000  # counters whose last version the feed keeps (20 MB at most, tracemalloc)


class Feed:
    """An open change feed (see the module docstring); `async for item in feed`, then
    `await feed.aclose()` (or use it as an async context manager)."""

    def __init__(
        self,
        transport: Transport,
        path: str,
        prefix: str = "",
        last_event_id: str | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.transport = transport
        self.path = path
        self.params = {"prefix": prefix} if prefix else None
        self.idle_timeout_s = idle_timeout_s
        # of the last event yielded (or the stream's position, all yielded): a resume point
        self.last_event_id = last_event_id
        self.url: str | None = None  # the node streamed from
        self.reconnects = 0
        self.cutoffs = 0
        self._resume_id = last_event_id  # the last id received (events may be queued)
        self._queue: deque[FeedItem] = deque()
        self._response: aiohttp.ClientResponse | None = None
        self._parser = Parser()
        self._random = random.Random()
        self._closed = False
        self._barren = 0  # streams in a row lost before they gave a frame: the back-off
        self.stale = 0  # events dropped as older than one already yielded for their counter
        # name -> (version, value) of its last event yielded, least recently yielded first
        self._versions: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def __aiter__(self) -> Feed:
        return self

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._drop()

    async def __anext__(self) -> FeedItem:
        while True:
            while not self._queue:
                if self._closed:
                    raise StopAsyncIteration
                if self._response is None:
                    await self._open()
                await self._read()
            item = self._queue.popleft()
            if isinstance(item, ChangeEvent):
                self.last_event_id = item.id  # a resume point, yielded or not
                ordered = self._in_order(item)
                if ordered is None:
                    continue
                return ordered
            return item

    def _in_order(self, event: ChangeEvent) -> ChangeEvent | None:
        """None when the event's state is older than the last one yielded for its counter
        (dropped); else the event, its change counted from that one's value (see above)."""
        if event.version is None:
            return event
        last = self._versions.pop(event.name, None)
        if last is not None and event.version < last[0]:
            self._versions[event.name] = last
            self.stale += 1
            return None
        self._versions[event.name] = (event.version, event.value)
        if len(self._versions) > ORDER_MEMORY:
            self._versions.popitem(last=False)
        if last is not None and event.change != event.value - last[1]:
            return dataclasses.replace(event, change=event.value - last[1])
        return event

    async def _read(self) -> None:
        """One chunk of the stream into the queue; a broken stream is dropped, to reopen."""
        assert self._response is not None
        try:  # idle_timeout_s bounds each read (the session's sock_read)
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            log.info("change feed from %s broke: %r; resuming elsewhere", self.url, error)
            self._lost()
            return
        if not chunk:  # the node closed the stream (it stopped, or it died)
            log.info("change feed from %s ended; resuming elsewhere", self.url)
            self._lost()
            return
        for frame in self._parser.feed(chunk):
            self._take(frame)
        self._resume_id = self._parser.last_id  # an id without an event moves it too
        if not self._queue:
            self.last_event_id = self._resume_id

    def _take(self, frame: Frame) -> None:
        self._barren = 0
        if frame.event == "change":
            self._queue.append(change_event(frame.data, frame.id))
        elif frame.event == "gap":
            self._queue.append(gap_event(frame.data))
        elif frame.event == "cutoff":
            self.cutoffs += 1  # we read too slowly; the node closes the stream next
            log.warning("change feed cut off by %s: %s", self.url, frame.data[:200])
        # other event types are a newer node's: ignored, as SSE clients do

    def _lost(self) -> None:
        self._drop()
        if self._closed:
            return  # closed under a read (by the client's close): nothing to resume
        self._barren += 1
        if self.url is not None:
            self.transport._suspect(self.url)
        if self.transport.options.route:
            self.transport.refresh_soon()

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    async def _open(self) -> None:
        transport = self.transport
        assert transport.session is not None, "use the client as an async context manager"
        options = transport.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.deadline_s
        headers = dict(transport.headers, Accept="text/event-stream")
        if self._resume_id:
            headers["Last-Event-ID"] = self._resume_id
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=options.request_timeout_s, sock_read=self.idle_timeout_s
        )
        attempt = 0
        last: errors.CountersError | None = None
        if self._barren:  # streams that end at once must not make a busy loop
            await asyncio.sleep(
                retry.backoff_s(
                    self._barren - 1, options.backoff_base_s, options.backoff_cap_s,
                    self._random.random(),
                )
            )  # fmt: skip
        while True:
            url = transport.any_node(transport.suspects())
            retry_after = None
            try:
                response = await transport.session.get(
                    url + self.path, headers=headers, params=self.params, timeout=timeout
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                last = errors.ConnectionFailed(f"GET {url}{self.path}: {error!r}")
                transport._suspect(url)
                if options.route:
                    transport.refresh_soon()
            else:
                if response.status == 200:
                    self._started(response, url)
                    return
                last = await _refusal(response)
                retry_after = retry.retry_after_s(response.headers.get("Retry-After"))
                if not retry.retryable(response.status, retry_after):
                    raise last
                transport._suspect(url)  # not ready, or serving its limit of streams
            wait = retry.next_wait_s(
                attempt, retry_after, deadline - loop.time(), options.backoff_base_s,
                options.backoff_cap_s, self._random.random(),
            )  # fmt: skip
            if wait is None:
                raise errors.DeadlineExceeded(
                    f"GET {self.path}: no node streamed within {options.deadline_s:g} s; "
                    f"last: {last}",
                    last,
                )
            attempt += 1
            await asyncio.sleep(wait)

    def _started(self, response: aiohttp.ClientResponse, url: str) -> None:
        if self.url is not None:
            self.reconnects += 1
        self._response, self.url = response, url
        self._parser = Parser(self._resume_id)


async def _refusal(response: aiohttp.ClientResponse) -> errors.CountersError:
    try:
        payload: Any = await _json(response)
    finally:
        response.release()
    return errors.from_problem(response.status, payload)


__all__ = ["BadEvent", "Feed"]

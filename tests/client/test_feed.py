"""The change feed in the client: SSE framing (pure), event decoding, and the Feed iterator
against scripted SSE servers on real sockets: it resumes on another node with Last-Event-ID
after a dropped connection, a cut-off or silence, yields gaps, and raises refusals typed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from counters_client import AsyncClient, ChangeEvent, Client, Gap, errors
from counters_client.realtime import BadEvent, change_event
from counters_client.sse import Frame, Parser

# SSE framing ---------------------------------------------------------------------------

STREAM = (
    b"retry: 1000\n\n"
    b": keep-alive\n\n"
    b'id: n1:5\nevent: change\ndata: {"name": "a",\ndata: "value": 1}\n\n'
    b"event: gap\r\ndata: {}\r\n\r\n"
    b"data:no space\rid:n1:7\r\r"
    b"id: n1:8\n\n"  # no data: not dispatched, but the id stays
    b"event: change\ndata: x\n\n"
    b"event: change\ndata: cut short"
)
FRAMES = [
    Frame("change", '{"name": "a",\n"value": 1}', "n1:5"),
    Frame("gap", "{}", "n1:5"),
    Frame("message", "no space", "n1:7"),
    Frame("change", "x", "n1:8"),
]


def test_frames_multi_line_data_comments_ids_and_line_ends() -> None:
    parser = Parser()
    assert parser.feed(STREAM) == FRAMES
    assert parser.comments == 1 and parser.retry_ms == 1000 and parser.last_id == "n1:8"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_frames_do_not_depend_on_where_chunks_are_cut(size: int) -> None:
    parser = Parser()
    frames = []
    for start in range(0, len(STREAM), size):
        frames += parser.feed(STREAM[start : start + size])
    assert frames == FRAMES


def test_odd_fields_are_ignored_and_the_id_is_kept_from_before() -> None:
    parser = Parser(last_id="n2:1")
    got = parser.feed(b"id: bad\0id\nretry: soon\nfoo: bar\ndata\n\n")
    assert got == [Frame("message", "", "n2:1")] and parser.retry_ms is None


def test_change_data_decodes_and_bad_data_is_a_bad_event() -> None:
    data = '{"name":"v","value":42,"change":3,"at":"2026-12-01T02:00:00.100Z","replayed":true}'
    event = change_event(data, "n1:9")
    assert event == ChangeEvent(
        "v", 42, 3, datetime(2026, 12, 1, 2, 0, 0, 100_000, tzinfo=UTC), "n1:9", True
    )
    for bad in ("not json", '{"name": "v"}', '{"name":"v","value":"x","change":1,"at":"t"}'):
        with pytest.raises(BadEvent):
            change_event(bad, "n1:9")


# The Feed against scripted nodes ---------------------------------------------------------


def change(seq: int, value: int, change_: int = 1) -> bytes:
    data = {"name": "c", "value": value, "change": change_, "at": "2026-12-01T00:00:00.000Z"}
    return f"id: n1:{seq}\nevent: change\ndata: {json.dumps(data)}\n\n".encode()


GAP = b'event: gap\ndata: {"node": "n1", "after": 2, "oldest_held_after": 5}\n\n'
CUTOFF = b'event: cutoff\ndata: {"reason": "slow"}\n\n'
HANG = None  # keep the stream open, silent


class Node:
    """A scripted node: per connection, a status and the chunks it sends, then it closes
    (or, after HANG, stays silent). Records every Last-Event-ID it was sent."""

    def __init__(self) -> None:
        self.script: list[tuple[int, list[bytes | None]]] = []
        self.resumed_from: list[str | None] = []
        self.url = ""

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.resumed_from.append(request.headers.get("Last-Event-ID"))
        status, chunks = self.script.pop(0) if self.script else (200, [HANG])
        if status != 200:
            slug = {403: "forbidden", 503: "too-many-streams"}[status]
            problem = {"type": f"/problems/{slug}", "status": status, "detail": slug}
            return web.json_response(problem, status=status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            if chunk is HANG:
                await asyncio.sleep(30)
            else:
                await response.write(chunk)
        return response  # the handler ends: the connection closes mid-stream


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    found, servers = [], []
    for _ in range(2):
        node = Node()
        app = web.Application()
        app.router.add_get("/v1/namespaces/ns/events", node.events)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        node.url = f"http://127.0.0.1:{server.port}"
        found.append(node)
        servers.append(server)
    try:
        yield found
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.close()


FAST: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "route": False}


async def take(feed: Any, count: int) -> list[Any]:
    async with asyncio.timeout(10):
        return [await feed.__anext__() for _ in range(count)]


async def test_the_feed_resumes_on_the_next_node_after_a_drop_a_cutoff_and_silence(
    nodes: list[Node],
) -> None:
    first, second = nodes
    first.script = [
        (200, [b"retry: 1000\n\n: keep-alive\n\n", change(1, 1), change(2, 3, 2)]),  # dropped
        (200, [change(4, 6), b'id: n1:99\nevent: change\ndata: {"name"', HANG]),  # silent
    ]
    second.script = [(200, [GAP, change(3, 5, 2), CUTOFF]), (200, [change(5, 9, 3), HANG])]
    async with AsyncClient([first.url, second.url], deadline_s=5, **FAST) as client:
        async with client.events("ns", idle_timeout_s=0.5) as feed:
            items = await take(feed, 6)
    assert [(e.value, e.id) for e in items if isinstance(e, ChangeEvent)] == [
        (1, "n1:1"), (3, "n1:2"), (5, "n1:3"), (6, "n1:4"), (9, "n1:5"),
    ]  # fmt: skip
    assert items[2] == Gap("n1", 2, 5)
    assert sum(e.change for e in items if isinstance(e, ChangeEvent)) == 9
    # each reconnect named the last whole event it received; a half frame counts for nothing
    assert first.resumed_from == [None, "n1:3"] and second.resumed_from == ["n1:2", "n1:4"]
    assert (feed.reconnects, feed.cutoffs, feed.last_event_id) == (3, 1, "n1:5")


def versioned(seq: int, value: int, version: int, change: int = 0) -> bytes:
    data = {"name": "c", "value": value, "change": change, "at": "2026-12-01T00:00:00.000Z"}
    data["version"] = version
    return f"id: n1:{seq}\nevent: change\ndata: {json.dumps(data)}\n\n".encode()


async def test_an_older_state_after_a_reconnect_is_dropped_and_a_decrement_is_not(
    nodes: list[Node],
) -> None:
    """Across a failover two nodes may both have published a counter's states; the second
    stream remembers nothing of the first, so the feed keeps the order itself: by version
    (the state), not by value, which may go down."""
    first, second = nodes
    first.script = [(200, [versioned(1, 60, 60), versioned(2, 68, 68)])]  # then it breaks
    second.script = [
        (200, [versioned(3, 63, 63), versioned(4, 68, 68), versioned(5, 66, 70), HANG])
    ]
    async with AsyncClient([first.url, second.url], deadline_s=5, **FAST) as client:
        async with client.events("ns") as feed:
            items = await take(feed, 4)
    assert [(e.value, e.version) for e in items] == [(60, 60), (68, 68), (68, 68), (66, 70)]
    assert feed.stale == 1 and feed.last_event_id == "n1:5"


async def test_the_changes_yielded_add_up_to_the_value_across_reconnects(
    nodes: list[Node],
) -> None:
    """After a reconnect a node may send a counter's state again (at least once) or one
    older than the last yielded, then a change counted from that one: the feed counts each
    change it yields from the last value it yielded, so a caller summing them is not off."""
    first, second = nodes
    first.script = [(200, [versioned(1, 10, 10, change=10)])]  # then it breaks
    second.script = [
        (200, [versioned(2, 8, 8, 8), versioned(3, 12, 12, 4), versioned(4, 12, 12, 4), HANG])
    ]
    async with AsyncClient([first.url, second.url], deadline_s=5, **FAST) as client:
        async with client.events("ns") as feed:
            items = await take(feed, 3)
    assert [(e.value, e.change) for e in items] == [(10, 10), (12, 2), (12, 0)]
    assert sum(e.change for e in items) == items[-1].value


async def test_a_resume_point_given_is_sent_and_a_busy_node_is_skipped(nodes: list[Node]) -> None:
    first, second = nodes
    first.script = [(503, [])]
    second.script = [(200, [change(8, 80), HANG])]
    async with AsyncClient([first.url, second.url], deadline_s=5, **FAST) as client:
        async with client.events("ns", last_event_id="n1:7") as feed:
            [event] = await take(feed, 1)
    assert event.value == 80 and second.resumed_from == ["n1:7"]
    assert first.resumed_from == ["n1:7"]


async def test_a_refusal_is_raised_typed_at_once(nodes: list[Node]) -> None:
    first, _ = nodes
    first.script = [(403, [])]
    async with AsyncClient([first.url], deadline_s=5, **FAST) as client:
        feed = client.events("ns")
        with pytest.raises(errors.Forbidden):
            await take(feed, 1)
    assert first.resumed_from == [None]


async def test_no_node_within_the_deadline_is_deadline_exceeded(nodes: list[Node]) -> None:
    first, _ = nodes
    first.script = [(503, [])] * 1000
    async with AsyncClient([first.url], deadline_s=0.3, **FAST) as client:
        with pytest.raises(errors.DeadlineExceeded) as raised:
            await take(client.events("ns"), 1)
    assert isinstance(raised.value.last, errors.TooManyStreams)


async def test_the_blocking_client_iterates_the_feed(nodes: list[Node]) -> None:
    first, _ = nodes
    first.script = [(200, [change(1, 1), change(2, 2), HANG])]

    def blocking() -> list[Any]:  # in a thread: the scripted node runs on this loop
        with Client([first.url], deadline_s=5, **FAST) as client:
            feed = client.events("ns", prefix="c")
            got = [next(feed), next(feed)]
            feed.close()
        return got

    got = await asyncio.wait_for(asyncio.to_thread(blocking), 10)
    assert [event.value for event in got] == [1, 2]


async def test_streams_that_end_at_once_are_reopened_with_a_back_off(nodes: list[Node]) -> None:
    first, _ = nodes
    first.script = [(200, [b": hello\n\n"])] * 1000  # each stream ends before any event
    options = {**FAST, "backoff_base_s": 0.1, "backoff_cap_s": 0.2}
    async with AsyncClient([first.url], deadline_s=5, **options) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await client.events("ns").__anext__()
    # about ten (a mean wait of 0.1 s); with no back-off, hundreds in a second
    assert 3 <= len(first.resumed_from) <= 30, len(first.resumed_from)


async def test_closing_the_client_ends_the_iteration(nodes: list[Node]) -> None:
    first, _ = nodes
    first.script = [(200, [change(1, 1), HANG])]
    items: list[Any] = []
    got_one = asyncio.Event()
    async with AsyncClient([first.url], deadline_s=5, **FAST) as client:
        feed = client.events("ns")

        async def drain() -> None:
            async for item in feed:
                items.append(item)
                got_one.set()

        reader = asyncio.create_task(drain())
        await asyncio.wait_for(got_one.wait(), 10)
    await asyncio.wait_for(reader, 5)  # ended, not failed, by the client's close
    assert [e.value for e in items] == [1] and len(first.resumed_from) == 1

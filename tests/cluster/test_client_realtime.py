"""counters-client's real-time reads and change feed against three real node processes:
windowed reads, aggregates and top-k equal a model of the client's own writes; the feed
sees every change of a counter in order, and when the node it streams from is killed -9 it
resumes on another node with no gap and no repeat, also when it dies before the first
event."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest
from counters_client import (
    Aggregate,
    AsyncClient,
    ChangeEvent,
    Client,
    Feed,
    Top,
    TopEntry,
    Windowed,
    errors,
)

from node.http.auth import READ, WRITE
from tests.cluster.harness import Cluster
from tests.support import client_token, eventually

NS = "clientrt"
SECRET = "client-realtime-secret-" * 3
NAMES = [f"{group}:{i}" for group in ("a", "b") for i in range(6)]


async def write_model(client: AsyncClient, rounds: int) -> dict[str, int]:
    """Acknowledged increments of random counters; their values (all within any window)."""
    rng = random.Random(5)
    values: dict[str, int] = {}
    for _ in range(rounds):
        name, delta = rng.choice(NAMES), rng.randint(1, 20)
        values[name] = await client.incr(NS, name, delta)
    return values


def top_of(values: dict[str, int], prefix: str, k: int, window: bool) -> tuple[TopEntry, ...]:
    chosen = sorted(
        ((n, v) for n, v in values.items() if n.startswith(prefix)), key=lambda i: (-i[1], i[0])
    )
    return tuple(TopEntry(n, v, v if window else None) for n, v in chosen[:k])


async def realtime_reads_match(client: AsyncClient, values: dict[str, int]) -> None:
    a_values = [v for n, v in values.items() if n.startswith("a:")]
    want = {
        "aggregate": Aggregate(NS, "a:", len(a_values), sum(a_values), sum(a_values), "15m"),
        "aggregate all": Aggregate(NS, "", len(values), sum(values.values())),
        "top": Top(NS, "a:", "value", top_of(values, "a:", 3, False)),
        "top change": Top(NS, "", "change", top_of(values, "", 4, True), "1h"),
    }
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen["aggregate"] = await client.aggregate(NS, prefix="a:", window="15m")
        seen["aggregate all"] = await client.aggregate(NS)
        seen["top"] = await client.top(NS, k=3, prefix="a:")
        seen["top change"] = await client.top(NS, k=4, by="change", window="1h")
        return seen == want

    await eventually(check, "aggregate and top equal the model", 15, show=lambda: seen)
    for name in NAMES[::3]:
        value = values.get(name, 0)
        windowed = await client.get_window(NS, name, "15m", consistency="all")
        assert windowed == Windowed(value, value, round(value / 900, 6), "15m"), windowed
        assert await client.get(NS, name) == value  # get stays a plain int


def blocking_reads(urls: list[str], token: str) -> tuple[Any, ...]:
    """The same reads through the blocking Client (run in a thread)."""
    with Client(urls, token) as client:
        return (
            client.aggregate(NS, prefix="a:", window="15m"),
            client.top(NS, k=3, prefix="a:"),
            client.get_window(NS, "a:0", "15m", consistency="all"),
        )


async def bad_reads_are_refused(client: AsyncClient, values: dict[str, int]) -> None:
    for call, kind in (
        (client.top(NS, k=0), errors.InvalidBody),
        (client.top(NS, by="change"), errors.InvalidBody),  # a change needs a window
        (client.aggregate(NS, window="25h"), errors.InvalidBody),
        (client.aggregate(NS, prefix="a/b"), errors.InvalidName),
        (client.get_window(NS, "a:0", "15"), errors.InvalidBody),
    ):
        with pytest.raises(kind):
            await call
    assert await client.get_many(NS, list(values), consistency="all") == values


async def drain(feed: Feed, into: list[Any]) -> None:
    async for item in feed:
        into.append(item)


def changes(items: list[Any], name: str) -> list[ChangeEvent]:
    return [e for e in items if isinstance(e, ChangeEvent) and e.name == name]


async def write_in_turns(client: AsyncClient, name: str, first: int, count: int) -> list[int]:
    """`count` increments of first, first+1, ...: the values acknowledged, in order."""
    totals = []
    for delta in range(first, first + count):
        totals.append(await client.incr(NS, name, delta))
        await asyncio.sleep(0.03)  # spread over several coalescing intervals
    return totals


async def test_realtime_reads_and_a_feed_that_survives_its_node(cluster: Cluster) -> None:
    cluster.settings.update(
        COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET, COUNTERS_EVENTS_HEARTBEAT_S="0.5"
    )
    nodes = await cluster.start(3)
    token = client_token(SECRET, "acme", (READ, WRITE))
    async with AsyncClient([n.url for n in nodes], token, deadline_s=20) as client:
        values = await write_model(client, 40)
        await realtime_reads_match(client, values)
        blocking = await asyncio.to_thread(blocking_reads, [n.url for n in nodes], token)
        assert blocking == (
            await client.aggregate(NS, prefix="a:", window="15m"),
            await client.top(NS, k=3, prefix="a:"),
            await client.get_window(NS, "a:0", "15m", consistency="all"),
        )
        await bad_reads_are_refused(client, values)

        items: list[Any] = []
        feed = client.events(NS, prefix="f:", idle_timeout_s=5)
        reader = asyncio.create_task(drain(feed, items))
        try:
            # the stream tails from the moment it opened: a first event proves it is open
            await client.incr(NS, "f:warm", 1)
            await eventually(lambda: changes(items, "f:warm"), "the feed's first event", 10)
            topology = client.topology
            streamed = topology.node_of(feed.url)
            # a counter published by another node, so that killing the streamed one kills
            # only the connection (a publisher's death replays; test_feed.py covers that)
            name = next(
                f"f:{i}"
                for i in range(100)
                if topology.node_of(topology.coordinator(topology.shard_of(NS, f"f:{i}")))
                != streamed
            )
            totals = await write_in_turns(client, name, 1, 8)
            await eventually(
                lambda: [e.value for e in changes(items, name)][-1:] == totals[-1:],
                "the feed reaches the total",
                10,
            )
            # stop reading, kill -9 the streamed node, write while no stream is open, then
            # read on: the feed reconnects only now, and must resume where it left off
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            cluster.nodes[streamed].kill()
            totals += await write_in_turns(client, name, 9, 5)
            await asyncio.sleep(0.5)  # published meanwhile (a few coalescing intervals)
            reader = asyncio.create_task(drain(feed, items))
            await eventually(
                lambda: [e.value for e in changes(items, name)][-1:] == totals[-1:],
                "the resumed feed reaches the total",
                15,
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await feed.aclose()
        seen = changes(items, name)
        values_seen = [e.value for e in seen]
        # in order, each a value some acknowledged write made, no repeat, changes add up
        assert values_seen == sorted(set(values_seen)) and set(values_seen) <= set(totals)
        assert sum(e.change for e in seen) == totals[-1] == sum(range(1, 14))
        assert feed.reconnects >= 1 and topology.node_of(feed.url) != streamed
        assert not [e for e in seen if e.replayed] and all(
            isinstance(e, ChangeEvent) for e in items
        )


async def test_a_feed_lost_before_its_first_event_misses_nothing(cluster: Cluster) -> None:
    """A feed whose node dies before it delivered any event still resumes where it started:
    the node gives a stream's starting position as an id (a frame without data) and the
    client resumes from the last id of any frame, so changes published while it reconnects
    are yielded."""
    cluster.settings.update(COUNTERS_EVENTS_HEARTBEAT_S="0.5")
    nodes = await cluster.start(3)
    async with AsyncClient([n.url for n in nodes], deadline_s=20) as client:
        items: list[Any] = []
        feed = client.events(NS, prefix="f:", idle_timeout_s=5)
        reader = asyncio.create_task(drain(feed, items))
        try:
            await eventually(lambda: feed.url is not None, "the feed opened", 10)
            await asyncio.sleep(1.0)  # the stream has taken its place at the logs' tail
            topology = client.topology
            streamed = topology.node_of(feed.url)
            name = next(
                f"f:{i}"
                for i in range(100)
                if topology.node_of(topology.coordinator(topology.shard_of(NS, f"f:{i}")))
                != streamed
            )
            # stop reading (no event came yet), kill -9 the streamed node, write while
            # the feed is open but not connected, then read on: it reconnects now
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            cluster.nodes[streamed].kill()
            totals = [await client.incr(NS, name, delta) for delta in (1, 2, 3)]
            await asyncio.sleep(0.5)  # published meanwhile
            reader = asyncio.create_task(drain(feed, items))
            await eventually(lambda: feed.reconnects >= 1, "the feed reconnected", 15)
            await asyncio.sleep(1.0)
            totals.append(await client.incr(NS, name, 4))
            await eventually(
                lambda: [e.value for e in changes(items, name)][-1:] == totals[-1:],
                "the feed reaches the total",
                15,
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await feed.aclose()
        seen = changes(items, name)
        summary = [(e.value, e.change) for e in seen]
        assert sum(e.change for e in seen) == totals[-1] == 10, (summary, totals)

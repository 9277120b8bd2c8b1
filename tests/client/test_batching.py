"""The add() path against a scripted node (a real socket): what a caller of add(), flush()
and close() relies on. A batch larger than the tenant's rate-limit burst is split until
its parts pass; a call refused 429 on every attempt says it did not apply; at most
max_requests batches are in flight; flush() returns while others keep adding; a close()
cut short reports every add it leaves, and an add() blocked for room is either sent or
refused by a concurrent close(); failures held for flush() stay bounded."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from counters_client import AsyncClient, Client, errors

SHARDS = 4
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "request_timeout_s": 5.0}


class Fake:
    """What the node answers, and what it saw."""

    def __init__(self) -> None:
        self.address = ""
        self.mode = "ok"  # ok | hang | 429 | overflow (every op refused 422)
        self.delay_s = 0.0  # before each answer
        self.burst: int | None = None  # a batch of more ops: 429 without Retry-After
        self.seen: list[tuple[str, bytes, str | None]] = []  # path, body, Idempotency-Key
        self.in_flight = 0
        self.most_in_flight = 0


def _problem(status: int, slug: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": slug, **extra}


def _app(fake: Fake) -> web.Application:
    async def topology(request: web.Request) -> web.Response:
        return web.json_response({
            "epoch": 1, "checksum": "c", "shards": SHARDS, "replicas": 1, "tenant": "acme",
            "nodes": {"n1": {"address": fake.address, "status": "up"}},
            "preference_lists": [["n1"]] * SHARDS,
        })  # fmt: skip

    async def op(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fake.seen.append((request.path, body, request.headers.get("Idempotency-Key")))
        fake.in_flight += 1
        fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
        try:
            if fake.mode == "hang":
                await asyncio.sleep(60)
            if fake.delay_s:
                await asyncio.sleep(fake.delay_s)
            if fake.mode == "429":
                return web.json_response(
                    _problem(429, "rate-limited"), status=429, headers={"Retry-After": "0"}
                )
            if not request.path.endswith("/batch"):
                return web.json_response({"value": 1})
            ops = json.loads(body)["ops"]
            if fake.burst is not None and len(ops) > fake.burst:
                problem = _problem(429, "rate-limited", retry_after_s=None, burst=fake.burst)
                return web.json_response(problem, status=429)  # no Retry-After: none helps
            if fake.mode == "overflow":
                problem = _problem(422, "overflow")
                return web.json_response(
                    {"results": [{"op": o["op"], "name": o["name"], "error": problem} for o in ops]}
                )
            return web.json_response(
                {"results": [{"op": o["op"], "name": o["name"], "value": 1} for o in ops]}
            )
        finally:
            fake.in_flight -= 1

    app = web.Application()
    app.router.add_get("/v1/topology", topology)
    app.router.add_route("*", "/v1/namespaces/{tail:.*}", op)
    return app


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    f = Fake()
    server = TestServer(_app(f), host="127.0.0.1")
    await server.start_server()
    f.address = f"127.0.0.1:{server.port}"
    try:
        yield f, f"http://{f.address}"
    finally:
        await server.close()


async def test_a_batch_larger_than_the_burst_goes_in_halves_each_under_a_new_key(fake) -> None:
    """A tenant whose rate-limit burst is below max_batch still gets every add() counted:
    the node refuses the batch (429, no Retry-After: nothing applied, no retry helps), so
    the client halves it, each part under a new key, until the parts pass."""
    f, url = fake
    f.burst = 50
    async with AsyncClient(url, deadline_s=30, **FAST) as client:
        for i in range(120):
            client.add("ns", f"c{i}")
        started = time.monotonic()
        await client.flush()
        assert time.monotonic() - started < 5, "the refusal was retried, not split"
        stats = client.stats
        assert (stats.added, stats.acknowledged, stats.failed) == (120, 120, 0)
    sizes = [len(json.loads(body)["ops"]) for _, body, _ in f.seen]
    assert sizes == [120, 60, 30, 30, 60, 30, 30], sizes
    keys = [key for *_, key in f.seen]
    assert len(set(keys)) == len(keys), "a part of a refused batch reused its key"


async def test_a_single_op_larger_than_the_burst_fails_at_once_not_applied(fake) -> None:
    f, url = fake
    f.burst = 0
    async with AsyncClient(url, deadline_s=30, **FAST) as client:
        client.add("ns", "a")
        started = time.monotonic()
        with pytest.raises(errors.RateLimited) as raised:
            await client.flush()
        assert time.monotonic() - started < 5
        assert not raised.value.may_have_applied
        assert (client.stats.failed, client.stats.failed_unknown) == (1, 0)
    assert len(f.seen) == 1


async def test_a_call_refused_429_on_every_attempt_says_it_did_not_apply(fake) -> None:
    """429 means nothing applied (errors.py: ClientErrors changed nothing), and
    may_have_applied "speaks for every attempt of the call": a call whose every attempt was
    answered 429 until the deadline must not say it may have applied."""
    f, url = fake
    f.mode = "429"
    async with AsyncClient(url, deadline_s=0.5, **FAST) as client:
        with pytest.raises(errors.DeadlineExceeded) as raised:
            await client.incr("ns", "a")
        assert isinstance(raised.value.last, errors.RateLimited)
        assert not raised.value.may_have_applied, "every attempt was refused 429"
        client.add("ns", "b")
        with pytest.raises(errors.DeadlineExceeded):
            await client.flush()
        assert (client.stats.failed, client.stats.failed_unknown) == (1, 0)


async def test_max_requests_bounds_the_batches_in_flight(fake) -> None:
    """At most max_requests batches are in flight at once, also when a flush takes counters
    of several namespaces (one batch each): the others wait for a slot."""
    f, url = fake
    f.delay_s = 0.3
    async with AsyncClient(url, deadline_s=10, max_requests=1, **FAST) as client:
        for ns in ("n1", "n2", "n3", "n4", "n5", "n6"):
            client.add(ns, "views")
        await client.flush()
        assert client.stats.acknowledged == 6
    assert f.most_in_flight <= 1, f"{f.most_in_flight} batches in flight with max_requests=1"


async def test_flush_returns_while_other_tasks_keep_adding(fake) -> None:
    """flush() waits for what was pending or in flight when it was called, not for the
    adds other tasks (or threads) make meanwhile: with a steady producer it still returns."""
    f, url = fake
    f.delay_s = 0.02  # a node answering in 20 ms
    async with AsyncClient(url, deadline_s=5, flush_interval_ms=5) as client:
        stop = asyncio.Event()

        async def produce() -> None:
            while not stop.is_set():
                client.add("ns", "views")
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        try:
            await asyncio.sleep(0.2)
            client.add("ns", "mine")
            try:
                await asyncio.wait_for(client.flush(), 3.0)
                returned = True
            except TimeoutError:
                returned = False
        finally:
            stop.set()
            await producer
        # "mine" and what was pending went out in one or two 20 ms round trips
        assert returned, "flush() did not return within 3 s while another task added"


async def test_a_close_cut_short_reports_every_add_not_only_those_in_flight(fake) -> None:
    """close() under a timeout while the one batch slot is busy: the batch in flight fails
    as may have applied, and the counters not sent yet fail as NotSent (nothing applied):
    every add is in stats and told to the listener, and nothing stays buffered."""
    f, url = fake
    f.mode = "hang"
    settled: list[tuple[str, int, int, Any]] = []
    client = AsyncClient(
        url, deadline_s=30, max_requests=1, max_batch=1, flush_interval_ms=5,
        listener=lambda ns, ops: settled.extend(ops), **FAST,
    )  # fmt: skip
    await client.start()
    for name in ("a", "b", "c"):
        client.add("ns", name)
    for _ in range(100):
        if f.seen:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.close(), 0.5)
    stats = client.stats
    report = {
        "settled": sorted(name for name, *_ in settled),
        "added": stats.added,
        "failed": stats.failed,
        "failed_unknown": stats.failed_unknown,
        "buffered": client.buffered,
    }
    expected = {
        "settled": ["a", "b", "c"], "added": 3, "failed": 3, "failed_unknown": 1, "buffered": 0
    }  # fmt: skip
    assert report == expected, report
    unsent = [error for *_, error in settled if isinstance(error, errors.NotSent)]
    assert len(unsent) == 2 and not any(e.may_have_applied for e in unsent), settled


def _close_while_an_add_waits_for_room(url: str) -> tuple[str, int, int]:
    """(what the blocked add() did, adds counted by stats.added, counters still buffered)."""
    client = Client(url, deadline_s=5, max_buffer=1, flush_interval_ms=1)
    client.add("ns", "a")  # the buffer is full until "a" is acknowledged
    outcome: list[str] = []

    def blocked_add() -> None:
        try:
            client.add("ns", "b")  # waits for room (overflow="block")
            outcome.append("returned")
        except RuntimeError:
            outcome.append("refused")  # "the client is closed": the caller knows

    thread = threading.Thread(target=blocked_add)
    thread.start()
    time.sleep(0.01)
    client.close()
    thread.join(10)
    return outcome[0], client.stats.added, client.buffered


async def test_an_add_blocked_for_room_is_sent_or_refused_by_close(fake) -> None:
    """A blocking Client's add() waiting for room while another thread closes the client
    either returns and is sent, or raises "the client is closed": never returns unsent."""
    f, url = fake
    f.delay_s = 0.05

    def rounds() -> list[tuple[str, int, int]]:
        return [_close_while_an_add_waits_for_room(url) for _ in range(15)]

    results = await asyncio.wait_for(asyncio.to_thread(rounds), 60)
    lost = [r for r in results if r[0] == "returned" and (r[1] != 2 or r[2] != 0)]
    assert not lost, f"add() returned but was never sent: {lost} of {results}"


async def test_failures_held_for_flush_stay_bounded(fake) -> None:
    """A producer that only calls add() against counters the node refuses (422 per op)
    does not grow `client.failures` without bound; flush() raises the first failure, with
    a note counting the others since the last flush()."""
    f, url = fake
    f.mode = "overflow"
    client = AsyncClient(url, deadline_s=5, flush_interval_ms=1)
    await client.start()
    try:
        for _ in range(400):  # one add per flush interval: a failed batch each
            client.add("ns", "at-the-bound")
            await asyncio.sleep(0.003)
        await client.batcher.drain()  # every batch settled (drain raises nothing)
        held = len(client.failures)
        assert client.stats.failed == 400
        assert held <= 100, f"{held} errors held for flush() to raise, one per failed batch"
        with pytest.raises(errors.Overflow) as raised:
            await client.flush()
        batches = client.stats.batches
        assert raised.value.__notes__ == [
            f"{batches - 1} more add() batches failed since the last flush()"
        ]
        assert client.failures == []
    finally:
        await client.close()

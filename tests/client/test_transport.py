"""The client's retries and routing against a scripted HTTP server (a real socket, answers
chosen by the test): same key on every attempt, Retry-After, the deadline, no retry of a
refusal, the next replica when one is dead, a newer epoch refreshes the map."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from counters_client import AsyncClient, Client, errors

from tests.support import eventually, free_port

SHARDS = 4


class Script:
    """What the fake node answers; every request it saw."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any, dict[str, str]]] = []  # popped per op request
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.epoch = 1
        self.topology_calls = 0
        self.dead = f"127.0.0.1:{free_port()}"  # nobody listens there
        self.address = ""
        self.first = "live"  # which node leads every shard
        self.topology_status = 200
        self.delays: list[float] = []  # popped per op request: seconds before it answers


def _topology(script: Script) -> dict[str, Any]:
    lead = ["dead", "live"] if script.first == "dead" else ["live", "dead"]
    return {
        "epoch": script.epoch,
        "checksum": f"c{script.epoch}",
        "shards": SHARDS,
        "replicas": 2,
        "tenant": "acme",
        "nodes": {
            "live": {"address": script.address, "status": "up"},
            "dead": {"address": script.dead, "status": "up"},
        },
        "preference_lists": [lead] * SHARDS,
    }


def _app(script: Script) -> web.Application:
    async def topology(request: web.Request) -> web.Response:
        script.topology_calls += 1
        status = script.topology_status
        if status != 200:
            slug = {401: "unauthorized", 404: "not-found"}[status]
            return web.json_response(_problem(status, slug), status=status)
        return web.json_response(_topology(script), headers={"Counters-Ring-Epoch": "1"})

    async def op(request: web.Request) -> web.Response:
        body = await request.read()
        script.seen.append((request.method, request.path, dict(request.headers), body))
        status, answer, headers = script.answers.pop(0) if script.answers else (200, None, {})
        if script.delays:
            await asyncio.sleep(script.delays.pop(0))  # past the client's attempt timeout
        if answer is None and request.path.endswith("/batch"):
            ops = json.loads(body)["ops"]
            answer = {"results": [{"op": o["op"], "name": o["name"], "value": 1} for o in ops]}
        if answer is None:
            answer = {"value": 7}
        headers = {"Counters-Ring-Epoch": str(script.epoch), **headers}
        return web.json_response(answer, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/topology", topology)
    app.router.add_route("*", "/v1/namespaces/{tail:.*}", op)
    return app


@pytest.fixture
async def node() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    server = TestServer(_app(script), host="127.0.0.1")
    await server.start_server()
    script.address = f"127.0.0.1:{server.port}"
    try:
        yield script, f"http://{script.address}"
    finally:
        await server.close()


def _problem(status: int, slug: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": slug, **extra}


FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "request_timeout_s": 1.0}


async def test_503_and_504_are_retried_with_the_same_key(node) -> None:
    script, url = node
    script.answers = [
        (503, _problem(503, "quorum-unavailable", may_have_applied=False), {}),
        (504, _problem(504, "quorum-timeout", may_have_applied=True), {}),
    ]
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        assert await client.incr("ns", "a", 3) == 7
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in script.seen}
    assert len(script.seen) == 3 and len(keys) == 1, script.seen
    assert {body for *_, body in script.seen} == {b'{"delta": 3}'}


async def test_429_waits_for_retry_after(node) -> None:
    script, url = node
    script.answers = [(429, _problem(429, "rate-limited"), {"Retry-After": "1"})]
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        started = time.monotonic()
        assert await client.incr("ns", "a") == 7
        assert time.monotonic() - started >= 1.0
    assert len(script.seen) == 2


async def test_a_refusal_is_raised_at_once_and_typed(node) -> None:
    script, url = node
    script.answers = [(422, _problem(422, "overflow"), {})]
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        with pytest.raises(errors.Overflow):
            await client.incr("ns", "a", 1)
    assert len(script.seen) == 1


async def test_the_deadline_ends_the_retries(node) -> None:
    script, url = node
    script.answers = [(503, _problem(503, "in-doubt", may_have_applied=True), {})] * 1000
    async with AsyncClient(url, deadline_s=0.5, **FAST) as client:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as raised:
            await client.incr("ns", "a")
        assert time.monotonic() - started < 1.5
    assert isinstance(raised.value.last, errors.InDoubt) and raised.value.may_have_applied
    assert len(script.seen) > 2


async def test_a_dead_coordinator_sends_the_op_to_the_next_replica(node) -> None:
    script, url = node
    script.first = "dead"
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        assert client.topology.coordinator(0).endswith(script.dead)
        assert await client.incr("ns", "a") == 7
        client.add("ns", "b", 2)
        await client.flush()
        assert client.stats.acknowledged == 1
    assert [path for _, path, *_ in script.seen] == [
        "/v1/namespaces/ns/counters/a/increment",
        "/v1/namespaces/ns/batch",
    ]


async def test_a_newer_epoch_in_a_reply_refreshes_the_map(node) -> None:
    script, url = node
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        assert client.topology.epoch == 1
        script.epoch = 2
        await client.incr("ns", "a")
        await eventually(lambda: client.topology.epoch == 2, "the map refreshed", 5, 0.01)
    assert script.topology_calls == 2


async def test_a_batch_with_an_op_short_of_quorum_is_sent_again_whole(node) -> None:
    script, url = node
    short = {"op": "increment", "name": "b", "error": _problem(503, "quorum-unavailable")}
    partial = {"results": [{"op": "increment", "name": "a", "value": 1}, short]}
    script.answers = [(200, partial, {})]
    settled: list[Any] = []
    async with AsyncClient(url, deadline_s=5, listener=lambda ns, ops: settled.append(ops),
                           **FAST) as client:  # fmt: skip
        client.add("ns", "a")
        client.add("ns", "b", 2)
        client.add("ns", "a")
        await client.flush()
        assert (client.stats.added, client.stats.acknowledged, client.stats.failed) == (3, 3, 0)
        assert client.buffered == 0
    bodies = {body for *_, body in script.seen}
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in script.seen}
    assert len(script.seen) == 2 and len(bodies) == 1 and len(keys) == 1
    assert json.loads(bodies.pop()) == {
        "ops": [{"op": "increment", "name": "a", "delta": 2}, {"op": "increment", "name": "b",
                "delta": 2}]}  # fmt: skip
    assert settled == [[("a", 2, 2, None), ("b", 2, 1, None)]]


async def test_a_batch_given_up_is_reported_and_frees_the_buffer(node) -> None:
    script, url = node
    script.answers = [(504, _problem(504, "quorum-timeout", may_have_applied=True), {})] * 1000
    async with AsyncClient(url, deadline_s=0.3, max_buffer=2, **FAST) as client:
        client.add("ns", "a")
        client.add("ns", "b")
        with pytest.raises(errors.BufferFull):
            client.add("ns", "c")
        with pytest.raises(errors.DeadlineExceeded):
            await client.flush()
        assert client.stats.failed == client.stats.failed_unknown == 2
        assert client.buffered == 0
        client.add("ns", "c")  # room again
        script.answers = []
        await client.flush()
        assert client.stats.acknowledged == 1


async def test_put_waits_for_room_that_add_refuses(node) -> None:
    script, url = node
    script.answers = [(503, _problem(503, "quorum-unavailable"), {})] * 3
    async with AsyncClient(url, deadline_s=5, max_buffer=1, **FAST) as client:
        client.add("ns", "a")
        with pytest.raises(errors.BufferFull):
            client.add("ns", "b")
        await client.put("ns", "b")  # waits until "a" is acknowledged
        assert client.stats.acknowledged == 1 and client.buffered == 1
        await client.flush()
        assert client.stats.acknowledged == 2 and client.buffered == 0


async def test_the_blocking_client(node) -> None:
    script, url = node
    script.answers = [(503, _problem(503, "quorum-unavailable"), {})] * 3
    outcome: dict[str, object] = {}

    def use() -> None:
        with Client(url, deadline_s=5, max_buffer=1, overflow="raise", **FAST) as client:
            client.add("ns", "a")
            try:
                client.add("ns", "b")
            except errors.BufferFull:
                outcome["raised"] = True
            client.flush()
            outcome["value"] = client.incr("ns", "c", 2)
        with Client(url, deadline_s=5, max_buffer=1, **FAST) as client:  # overflow="block"
            client.add("ns", "a")
            client.add("ns", "b")  # blocks until "a" is acknowledged
            client.flush()
            outcome["acknowledged"] = client.stats.acknowledged

    await asyncio.wait_for(asyncio.to_thread(use), 20)
    assert outcome == {"raised": True, "value": 7, "acknowledged": 2}
    assert len(script.seen) == 3 + 1 + 1 + 2  # 503s and the batch, incr, two batches


async def test_a_bad_token_fails_at_start_and_a_node_without_a_map_is_used_as_is(node) -> None:
    script, url = node
    script.topology_status = 401
    with pytest.raises(errors.Unauthorized):
        async with AsyncClient(url, "not-a-token", **FAST):
            pass
    script.topology_status = 404  # a node from before /v1/topology
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        assert client.topology is None
        assert await client.incr("ns", "a") == 7
        client.add("ns", "b")
        await client.flush()
        assert client.stats.acknowledged == 1


async def test_a_batch_answer_unlike_any_fails_the_batch_and_frees_its_room(node) -> None:
    script, url = node
    script.answers = [(200, {"nope": 1}, {}), (200, {"results": []}, {})]
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        client.add("ns", "a")
        with pytest.raises(errors.ServerError):
            await client.flush()
        client.add("ns", "b")
        with pytest.raises(errors.ServerError):
            await client.flush()
        assert (client.stats.failed, client.stats.failed_unknown, client.buffered) == (2, 2, 0)


async def test_a_call_that_may_have_applied_once_says_so_however_it_ends(node) -> None:
    """The first attempt times out (the node may have applied it), every later one is
    refused "not applied": the error must still say the call may have applied, and name
    the key to retry it under, so a caller never re-adds what may be counted already."""
    script, url = node
    script.delays = [1.5]  # past request_timeout_s
    refused = (503, _problem(503, "quorum-unavailable", may_have_applied=False), {})
    script.answers = [(200, None, {}), *[refused] * 1000]
    async with AsyncClient(url, deadline_s=2.0, **FAST) as client:
        with pytest.raises(errors.DeadlineExceeded) as raised:
            await client.incr("ns", "a")
        assert raised.value.may_have_applied
        key = raised.value.idempotency_key
        assert key == script.seen[0][2]["Idempotency-Key"]
        script.answers = []
        assert await client.incr("ns", "a", idempotency_key=key) == 7  # retried under it
    assert script.seen[-1][2]["Idempotency-Key"] == key
    unauthorized = (401, _problem(401, "unauthorized"), {})
    script.delays, script.answers = [1.5], [(200, None, {}), unauthorized]
    async with AsyncClient(url, deadline_s=5, **FAST) as client:
        with pytest.raises(errors.Unauthorized) as refusal:  # a 4xx after a timeout
            await client.batch("ns", [("increment", "a", 1)])
        assert refusal.value.may_have_applied and refusal.value.idempotency_key


async def test_the_blocking_client_refuses_adds_once_closed_and_sends_them_at_exit(node) -> None:
    """An add() after close() would sit in a buffer nobody sends: refused. A program that
    ends with its Client open still sends what it added (closed at exit)."""
    script, url = node

    def closed_then_add() -> None:
        client = Client(url, deadline_s=5, **FAST)
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            client.add("ns", "late")

    await asyncio.wait_for(asyncio.to_thread(closed_then_add), 20)
    assert not script.seen
    program = (
        "from counters_client import Client\n"
        f"client = Client({url!r}, deadline_s=5, flush_interval_ms=60000)\n"
        "client.add('ns', 'left-open', 3)\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", program)
    assert await asyncio.wait_for(child.wait(), 20) == 0
    [(method, path, _, body)] = script.seen
    assert (method, path) == ("POST", "/v1/namespaces/ns/batch")
    assert json.loads(body) == {"ops": [{"op": "increment", "name": "left-open", "delta": 3}]}


async def test_a_close_cut_short_reports_the_batch_it_abandons(node) -> None:
    """close() under a timeout while a batch is still being retried: the batch must be
    reported failed (it may have applied) and free its room, not vanish unsaid."""
    script, url = node
    script.answers = [(503, _problem(503, "quorum-unavailable"), {})] * 1000
    settled: list[Any] = []
    client = AsyncClient(url, deadline_s=30, listener=lambda ns, ops: settled.append(ops), **FAST)
    await client.start()
    client.add("ns", "a")
    client.batcher.flush_now()
    await eventually(lambda: script.seen, "the batch sent")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.close(), 0.3)
    assert (client.stats.added, client.stats.failed, client.stats.failed_unknown) == (1, 1, 1)
    assert client.buffered == 0
    [[(name, delta, adds, outcome)]] = settled
    assert (name, delta, adds) == ("a", 1, 1)
    assert isinstance(outcome, errors.ConnectionFailed) and outcome.may_have_applied


async def test_a_batch_that_applied_some_ops_never_reads_as_not_applied(node) -> None:
    """Answers that applied op a and refused op b "not applied", again and again: batch()
    must say the call may have applied (a did), and add() must count a acknowledged and b
    failed, not applied, whether the deadline or a refusal ended the retries."""
    script, url = node
    short = {"op": "increment", "name": "b", "error": _problem(503, "quorum-unavailable",
             may_have_applied=False)}  # fmt: skip
    partial = (200, {"results": [{"op": "increment", "name": "a", "value": 1}, short]}, {})
    script.answers = [partial] * 1000
    async with AsyncClient(url, deadline_s=0.3, **FAST) as client:
        with pytest.raises(errors.DeadlineExceeded) as raised:
            await client.batch("ns", [("increment", "a", 1), ("increment", "b", 1)])
        assert raised.value.may_have_applied and raised.value.idempotency_key
    refused = (401, _problem(401, "unauthorized"), {})
    for answers, ended in (([partial] * 1000, errors.DeadlineExceeded),
                           ([partial, refused], errors.Unauthorized)):  # fmt: skip
        script.answers = answers
        settled: list[Any] = []
        listener = functools.partial(_settled_into, settled)
        async with AsyncClient(url, deadline_s=0.3, listener=listener, **FAST) as client:
            client.add("ns", "a")
            client.add("ns", "b")
            with pytest.raises(ended):
                await client.flush()
            assert (client.stats.acknowledged, client.stats.failed) == (1, 1)
            assert client.stats.failed_unknown == 0
        [[acked, failed]] = settled
        assert acked == ("a", 1, 1, None) and failed[:3] == ("b", 1, 1)
        assert isinstance(failed[3], ended) and not failed[3].may_have_applied


def _settled_into(into: list[Any], namespace: str, ops: Any) -> None:
    into.append(ops)

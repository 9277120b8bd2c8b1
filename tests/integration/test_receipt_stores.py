"""Idempotency receipts in the durable replicas (SQLite, Redis, Redis Cluster): what is
stored is bounded by the window, expired receipts go in bounded steps, and a load pages
through any number of live receipts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from crdt import PNCounter
from crdt.receipts import Receipt
from node.storage.durable import RECEIPT_PAGE, DurableReplica, ReceiptEntry
from node.storage.durable_redis import RedisReplica
from node.storage.receipt_book import Reservation
from node.storage.store import CounterStore
from node.storage.write_behind import Persister
from tests.integration.redis_servers import RedisServer
from tests.integration.test_durable_replicas import replica  # noqa: F401  (the fixture)

WINDOW = 60_000


def _key(tmp_path: Path, name: str = "c") -> tuple[str, str, str]:
    return ("tenant", "rc" + tmp_path.name, name)


async def _loaded(durable: DurableReplica, shards: set[int], now_ms: int) -> list[ReceiptEntry]:
    return [entry async for page in durable.load_receipts(shards, now_ms) for entry in page]


def _many(key: tuple[str, str, str], shard: int, count: int, at_ms: int) -> list[ReceiptEntry]:
    return [(key, shard, f"batch#{i}", Receipt(at_ms, "n1:1", "fp", i)) for i in range(count)]


async def test_a_load_pages_through_more_receipts_than_a_page(
    replica: DurableReplica,  # noqa: F811
    tmp_path: Path,
):
    now_ms = int(time.time() * 1000)
    key, count = _key(tmp_path), RECEIPT_PAGE * 2 + 500
    written = _many(key, 31, count, now_ms)
    await replica.write_receipts(written, WINDOW, now_ms)
    pages = [page async for page in replica.load_receipts({31}, now_ms)]
    assert len(pages) >= 3 and all(len(page) <= RECEIPT_PAGE for page in pages)
    loaded = {(k, shard, idem): r for page in pages for k, shard, idem, r in page if k == key}
    assert loaded == {(k, shard, idem): r for k, shard, idem, r in written}


async def test_expired_receipts_are_not_loaded_and_go_in_bounded_steps(
    replica: DurableReplica,  # noqa: F811
    tmp_path: Path,
):
    now_ms = int(time.time() * 1000)
    key, live_key = _key(tmp_path, "old"), _key(tmp_path, "live")
    await replica.write_receipts(_many(key, 32, 2_500, now_ms), WINDOW, now_ms)
    later_ms = now_ms + WINDOW + 1  # the first 2,500 are now expired
    live = _many(live_key, 32, 10, later_ms)
    dropped = [await replica.write_receipts(live, WINDOW, later_ms)]
    assert {e[2] for e in await _loaded(replica, {32}, later_ms)} == {e[2] for e in live}
    while dropped[-1]:  # each write drops a bounded batch; later writes drain the rest
        dropped.append(await replica.write_receipts(live[:1], WINDOW, later_ms))
        assert len(dropped) < 10
    assert sum(dropped) == 2_500
    assert max(dropped) <= 5_000
    assert {e[2] for e in await _loaded(replica, {32}, later_ms)} == {e[2] for e in live}


async def test_a_receipt_already_past_the_window_is_not_stored(
    replica: DurableReplica,  # noqa: F811
    tmp_path: Path,
):
    now_ms = int(time.time() * 1000)
    key = _key(tmp_path)
    stale = [(key, 33, "stale", Receipt(now_ms - WINDOW - 1, "n1:1", "fp", 1))]
    await replica.write_receipts(stale, WINDOW, now_ms)
    assert [e for e in await _loaded(replica, {33}, now_ms - WINDOW - 1) if e[0] == key] == []


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_redis_receipt_keys_and_index_expire_with_the_window(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
):
    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    redis_replica = RedisReplica(server.url, cluster=kind == "redis-cluster")
    client = redis_replica._client  # only to look at what Redis holds
    try:
        now_ms = int(time.time() * 1000)
        window = 300  # milliseconds: Redis expires the keys itself
        await redis_replica.write_receipts(_many(_key(tmp_path), 34, 50, now_ms), window, now_ms)
        pattern = "rct:{34}:*" + tmp_path.name + "*"
        keys = [k async for k in _scan(client, pattern)]
        assert len(keys) == 50
        assert 0 < await client.pttl("rct:{34}:expiry") <= window
        deadline = time.monotonic() + 10
        while [k async for k in _scan(client, pattern)] or await client.exists("rct:{34}:expiry"):
            assert time.monotonic() < deadline, "receipt keys outlived their window"
            await asyncio.sleep(0.05)
    finally:
        await redis_replica.close()


async def _scan(client: object, pattern: str) -> AsyncIterator[bytes]:
    async for key in client.scan_iter(match=pattern, count=1000):  # type: ignore[attr-defined]
        yield key


async def _reservations(
    durable: DurableReplica, shards: set[int], now_ms: int
) -> dict[tuple[tuple[str, str, str], str], Reservation | None]:
    return {
        (key, idem): held
        async for page in durable.load_reservations(shards, now_ms)
        for key, _, idem, held in page
    }


async def test_reservations_are_stored_deleted_and_lapse_with_their_time(
    replica: DurableReplica,  # noqa: F811
    tmp_path: Path,
):
    """A replica's grants outlive its process: stored with a flush, loaded in pages at
    start, deleted when they end, and never loaded once lapsed."""
    now_ms = int(time.time() * 1000)
    key = _key(tmp_path)
    count = RECEIPT_PAGE + 10
    held = Reservation("n1", "token-1", now_ms + WINDOW)
    taken = [(key, 35, f"k{i}", held) for i in range(count)]
    lapsing = [(key, 35, "short", Reservation("n2", "token-2", now_ms + 1_000))]
    await replica.write_changes((), (), taken + lapsing, WINDOW, now_ms)

    pages = [page async for page in replica.load_reservations({35}, now_ms)]
    assert all(len(page) <= RECEIPT_PAGE for page in pages) and len(pages) >= 2
    loaded = await _reservations(replica, {35}, now_ms)
    assert loaded[(key, "k0")] == held and loaded[(key, "short")] == lapsing[0][3]
    assert len([name for name in loaded if name[0] == key]) == count + 1

    ended = [(key, 35, f"k{i}", None) for i in range(count - 1)]
    await replica.write_changes((), (), ended, WINDOW, now_ms)
    later = await _reservations(replica, {35}, now_ms + 2_000)  # "short" lapsed
    assert {name for name in later if name[0] == key} == {(key, f"k{count - 1}")}
    assert await _reservations(replica, {36}, now_ms) == {}


async def test_a_flush_writes_a_counter_and_its_receipts_in_one_step(
    replica: DurableReplica,  # noqa: F811
    tmp_path: Path,
):
    """write_changes stores the states, the receipts and the reservations of one flush;
    a counter with more receipts than one Redis call's budget is still written whole."""
    now_ms = int(time.time() * 1000)
    key = _key(tmp_path)
    state = PNCounter.empty().increment("n1:1", 1_500)
    receipts = _many(key, 37, 1_500, now_ms)
    await replica.write_changes([(key, 37, state)], receipts, (), WINDOW, now_ms)
    assert dict(await replica.load({37}))[key] == state
    assert len([e for e in await _loaded(replica, {37}, now_ms) if e[0] == key]) == 1_500


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_redis_reservations_are_kept_per_granting_node(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
):
    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    cluster = kind == "redis-cluster"
    n1 = RedisReplica(server.url, cluster=cluster, owner="n1" + tmp_path.name)
    n2 = RedisReplica(server.url, cluster=cluster, owner="n2" + tmp_path.name)
    try:
        now_ms = int(time.time() * 1000)
        key = _key(tmp_path)
        held = Reservation("n3", "token", now_ms + WINDOW)
        await n1.write_changes((), (), [(key, 38, "k", held)], WINDOW, now_ms)
        assert await _reservations(n1, {38}, now_ms) == {(key, "k"): held}
        assert await _reservations(n2, {38}, now_ms) == {}
    finally:
        await n1.close()
        await n2.close()


async def test_a_node_killed_after_one_redis_round_trip_of_a_flush_keeps_slot_and_receipt(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A flush whose first Redis round trip reaches Redis and whose next ones never do (the
    process dies): restarted from Redis, the node holds a counter's increment only together
    with its receipt. Before, the slot went in one round trip and the receipt in the next:
    restarted, the node held the increment without its receipt, answered "void" to a retry,
    and the retry applied again."""
    key = _key(tmp_path)
    shard = 39
    store = CounterStore(lambda _: shard, WINDOW)
    store.increment(key, "n1:1", 5)
    now_ms = int(time.time() * 1000)
    store.add_receipt(key, "order-1", Receipt(now_ms, "n1:1", "fp", 5))
    calls = 0
    real_execute = Pipeline.execute

    async def dies_after_one(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RedisConnectionError("the process died")
        return await real_execute(self, *args, **kwargs)

    before = RedisReplica(redis_server.url, cluster=False)
    monkeypatch.setattr(Pipeline, "execute", dies_after_one)
    await Persister(store, before, 60.0, WINDOW / 1000).flush()
    monkeypatch.setattr(Pipeline, "execute", real_execute)
    await before.close()

    restarted = CounterStore(lambda _: shard, WINDOW)
    after = RedisReplica(redis_server.url, cluster=False)
    try:
        await Persister(restarted, after, 60.0, WINDOW / 1000).load({shard})
    finally:
        await after.close()
    state = restarted.get(key)
    receipt = restarted.receipt(key, "order-1", now_ms)
    assert state is not None and state.value() == 5  # this flush's one round trip wrote it
    assert receipt is not None, "the increment came back without its receipt"

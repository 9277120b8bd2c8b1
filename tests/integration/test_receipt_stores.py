"""Idempotency receipts in the durable replicas (SQLite, Redis, Redis Cluster): what is
stored is bounded by the window, expired receipts go in bounded steps, and a load pages
through any number of live receipts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt.receipts import Receipt
from node.storage.durable import RECEIPT_PAGE, DurableReplica, ReceiptEntry
from node.storage.durable_redis import RedisReplica
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

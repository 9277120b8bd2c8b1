"""Redis Cluster: a flush that fails writes nothing after it raised.

What a user relies on: a flush that failed is put back and written again by a later flush,
and nothing of the failed one lands after that later flush. When one shard's script call
fails, the other shards' calls still under way end before the flush raises; otherwise the
failed flush's grant of a reservation, still on its way, landed after the next flush deleted
it, and Redis held (and a restarted node reloaded, for a receipt window) a grant that ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis

from crdt import PNCounter
from node.storage.durable import DurableError
from node.storage.durable_redis import RedisReplica
from node.storage.receipt_book import Reservation
from node.storage.redis_flush import ENTRIES_PER_CALL, index_key
from tests.integration.redis_servers import RedisCluster

KEY = ("t", "orphans", "held")


def _node_of(server: RedisCluster, key: str) -> str:
    with redis.RedisCluster.from_url(server.url) as client:
        node = client.get_node_from_key(key)
        return f"redis://{node.host}:{node.port}"


async def test_a_failed_flush_writes_nothing_after_a_later_flush(tmp_path: Path):
    with RedisCluster(tmp_path / "cluster") as server:
        slow = 1
        slow_node = _node_of(server, index_key(slow))
        failing = next(s for s in range(2, 64) if _node_of(server, index_key(s)) != slow_node)
        with redis.RedisCluster.from_url(server.url) as client:
            client.set(index_key(failing), "not a set")  # that shard's script call fails
        replica = RedisReplica(server.url, cluster=True, timeout_s=5)
        try:
            await replica.ping()
            now_ms = int(time.time() * 1000)
            state = PNCounter.empty().increment("n1:1", 1)
            # Warm the client up on both shards' nodes, scripts loaded.
            await replica.write_changes([(("t", "o", "w"), slow, state)], (), (), 0, now_ms)
            entries = [(("t", "o", f"c{i}"), slow, state) for i in range(ENTRIES_PER_CALL)]
            entries.append((("t", "o", "x"), failing, state))
            grant = Reservation("n1", "token-a", now_ms + 3_600_000)
            with redis.Redis.from_url(slow_node) as admin:
                admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            # Flush A: the slow shard's first call waits; its second holds the grant.
            first = asyncio.ensure_future(
                replica.write_changes(entries, (), [(KEY, slow, "idem", grant)], 0, now_ms)
            )
            try:
                await first
                raise AssertionError("flush A should fail on the failing shard")
            except DurableError:
                pass  # the persister puts A back; then the reservation ends
            # Flush B: the grant ended, delete it.
            await replica.write_changes((), (), [(KEY, slow, "idem", None)], 0, now_ms)
            await asyncio.sleep(1.0)  # what of A was still on its way lands
            held = [
                entry async for page in replica.load_reservations([slow], now_ms) for entry in page
            ]
            assert held == [], f"a reservation deleted by the later flush is back: {held}"
        finally:
            await replica.close()

"""Redis Cluster: flushes go on after the masters' script cache was emptied (a master
restarted, a replica promoted) while the node's client stays connected.

What a user relies on: a Redis Cluster whose every master answers is a healthy durable
replica (in sync mode, writes are acknowledged). The next flush over many shards gets a
NOSCRIPT per shard; the script is loaded once and the calls retried, with a bounded number
of shards side by side, instead of each loading it on every primary at once and exhausting
redis-py's connection pool (MaxConnectionsError: Redis counted as down).
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from crdt import PNCounter
from node.storage.durable import DurableError
from node.storage.durable_redis import RedisReplica
from tests.integration.redis_servers import RedisCluster

SHARDS = 256  # the default --shards; a busy node's flush touches most of them


async def test_a_flush_after_the_script_cache_is_emptied_succeeds(tmp_path: Path):
    with RedisCluster(tmp_path / "cluster") as server:
        replica = RedisReplica(server.url, cluster=True, timeout_s=5)
        try:
            await replica.last_incarnation("n1", 1)  # as a node starts
            await replica.load(range(SHARDS))
            state = PNCounter.empty().increment("n1:1", 1)
            entries = [(("t", "scripts", f"c{s}"), s, state) for s in range(SHARDS)]
            now_ms = int(time.time() * 1000)
            await replica.write_changes(entries, (), (), 60_000, now_ms)  # works
            for url in server.urls:  # what a master's restart or a failover does
                with redis.Redis.from_url(url) as admin:
                    admin.script_flush()
                    assert admin.ping()
            state = state.increment("n1:1", 1)
            entries = [(key, shard, state) for key, shard, _ in entries]
            failures = []
            for _ in range(2):  # the persister's next flush, and the one after
                try:
                    await replica.write_changes(entries, (), (), 60_000, now_ms)
                except DurableError as error:
                    failures.append(str(error))
            assert not failures, failures
        finally:
            await replica.close()

"""Redis as the durable replica, standalone or Redis Cluster.

Layout: counter `ctr:{S}:<member>` is a hash of `p:<actor>` and `n:<actor>` to decimal
counts; `ctr:{S}:keys` is the set of members of shard S. The hash tag {S} puts all of a
shard in one Redis Cluster slot, so one script call merges many counters of a shard (the
script never touches another slot), and recovering a shard reads one set and its hashes.
Counts are compared as decimal strings, since Lua numbers lose precision past 2**53.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from crdt import CodecError, PNCounter, receipts
from node.base.keys import Key
from node.storage.durable import DurableError, Entry, ReceiptEntry, key_of, member, state_of

MERGE_SCRIPT = """
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local arg = 1
for k = 2, #KEYS do
  local name, fields = ARGV[arg], tonumber(ARGV[arg + 1])
  arg = arg + 2
  for _ = 1, fields do
    local field, value = ARGV[arg], ARGV[arg + 1]
    arg = arg + 2
    local current = redis.call('HGET', KEYS[k], field)
    if not current or greater(value, current) then
      redis.call('HSET', KEYS[k], field, value)
    end
  end
  redis.call('SADD', KEYS[1], name)
end
return #KEYS - 1
"""
INCARNATION_SCRIPT = """
local known = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > known then redis.call('SET', KEYS[1], ARGV[1]) end
return known
"""
KEYS_PER_CALL = 200  # bounds one script's run time, so Redis never stalls long on us
# Seconds a Redis that stops answering (paused, partitioned, overloaded) may hold a call before
# it fails; without it (redis-py 5's default) a silent Redis hangs the write-behind forever and
# /readyz never reports it. A URL's own socket_timeout option overrides it.
SOCKET_TIMEOUT_S = 5.0


def _counter_key(shard: int, name: str) -> str:
    return f"ctr:{{{shard}}}:{name}"


def _index_key(shard: int) -> str:
    return f"ctr:{{{shard}}}:keys"


def _script_args(shard: int, entries: Sequence[Entry]) -> tuple[list[str], list[Any]]:
    keys: list[str] = [_index_key(shard)]
    args: list[Any] = []
    for key, _, state in entries:
        name = member(key)
        keys.append(_counter_key(shard, name))
        fields: list[Any] = []
        for prefix, counter in (("p:", state.p), ("n:", state.n)):
            for actor, count in counter.slots.items():
                fields += (prefix + actor, str(count))
        args += (name, len(fields) // 2, *fields)
    return keys, args


def _parse_hash(raw: dict[bytes, bytes]) -> PNCounter:
    slots: dict[str, tuple[int, int]] = {}
    try:
        for field, value in raw.items():
            kind, _, actor = field.decode().partition(":")
            p, n = slots.get(actor, (0, 0))
            count = int(value)
            slots[actor] = (count, n) if kind == "p" else (p, count) if kind == "n" else (-1, -1)
    except (UnicodeDecodeError, ValueError) as error:
        raise DurableError("corrupt counter hash in Redis") from error
    return state_of(slots)


class RedisReplica:
    def __init__(self, url: str, cluster: bool) -> None:
        self.name = "redis-cluster" if cluster else "redis"
        self._cluster = cluster
        timeout = SOCKET_TIMEOUT_S
        self._client: Any = (
            RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            if cluster
            else redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        )
        self._merge = self._client.register_script(MERGE_SCRIPT)
        self._incarnation = self._client.register_script(INCARNATION_SCRIPT)

    async def write(self, entries: Sequence[Entry]) -> None:
        by_shard: dict[int, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_shard[entry[1]].append(entry)
        calls = [
            _script_args(shard, shard_entries[start : start + KEYS_PER_CALL])
            for shard, shard_entries in by_shard.items()
            for start in range(0, len(shard_entries), KEYS_PER_CALL)
        ]
        try:
            if self._cluster:
                # redis-py refuses scripts in cluster pipelines; concurrent calls, each routed
                # to its slot's node, overlap their round trips all the same.
                await asyncio.gather(*(self._merge(keys=k, args=a) for k, a in calls))
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        await self._merge(keys=keys, args=args, client=pipe)
                    await pipe.execute()
        except (RedisError, OSError) as error:
            raise DurableError(f"redis write failed: {error}") from error

    async def load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        shards = sorted(shards)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.smembers(_index_key(shard))
                members = await pipe.execute()
            names = [
                (shard, raw.decode())
                for shard, found in zip(shards, members, strict=True)
                for raw in found
            ]
            async with self._client.pipeline(transaction=False) as pipe:
                for shard, name in names:
                    pipe.hgetall(_counter_key(shard, name))
                hashes = await pipe.execute()
        except (RedisError, OSError) as error:
            raise DurableError(f"redis load failed: {error}") from error
        return [
            (key_of(name), _parse_hash(raw))
            for (_, name), raw in zip(names, hashes, strict=True)
            if raw
        ]

    async def write_receipts(self, entries: Sequence[ReceiptEntry], window_ms: int) -> None:
        """Receipts of shard S live in `rct:{S}:<member>` (idempotency key -> receipt) and
        are indexed by `rct:{S}:keys`; both expire a window after their last receipt."""
        if not entries:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, shard, found in entries:
                    name = member(key)
                    hash_key, index_key = f"rct:{{{shard}}}:{name}", f"rct:{{{shard}}}:keys"
                    for idem, receipt in found.items():
                        pipe.hsetnx(hash_key, idem, json.dumps(receipt.to_wire()))
                    pipe.pexpire(hash_key, window_ms)
                    pipe.sadd(index_key, name)
                    pipe.pexpire(index_key, window_ms)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise DurableError(f"redis receipt write failed: {error}") from error

    async def load_receipts(self, shards: Collection[int]) -> list[ReceiptEntry]:
        shards = sorted(shards)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.smembers(f"rct:{{{shard}}}:keys")
                members = await pipe.execute()
            names = [
                (shard, raw.decode())
                for shard, found in zip(shards, members, strict=True)
                for raw in found
            ]
            async with self._client.pipeline(transaction=False) as pipe:
                for shard, name in names:
                    pipe.hgetall(f"rct:{{{shard}}}:{name}")
                hashes = await pipe.execute()
            out: list[ReceiptEntry] = []
            for (shard, name), raw in zip(names, hashes, strict=True):
                found = receipts.from_wire(
                    [[idem.decode(), json.loads(value)] for idem, value in raw.items()]
                )
                if found:
                    out.append((key_of(name), shard, found))
            return out
        except (RedisError, OSError) as error:
            raise DurableError(f"redis receipt load failed: {error}") from error
        except (ValueError, CodecError) as error:
            raise DurableError(f"corrupt receipt in Redis: {error}") from error

    async def last_incarnation(self, node_id: str, current: int) -> int:
        try:
            known = await self._incarnation(keys=[f"ctr:incarnation:{node_id}"], args=[current])
        except (RedisError, OSError) as error:
            raise DurableError(f"redis incarnation failed: {error}") from error
        return int(known)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            raise DurableError(f"redis unreachable: {error}") from error

    async def close(self) -> None:
        await self._client.aclose()

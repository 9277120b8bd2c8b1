"""Redis as the durable replica, standalone or Redis Cluster.

Layout: counter `ctr:{S}:<member>` is a hash of `p:<actor>` and `n:<actor>` to decimal
counts; `ctr:{S}:keys` is the set of members of shard S. The hash tag {S} puts all of a
shard in one Redis Cluster slot, so one script call merges many counters of a shard (the
script never touches another slot), and recovering a shard reads one set and its hashes.
Counts are compared as decimal strings, since Lua numbers lose precision past 2**53.

Idempotency receipts: one key per receipt, `rct:{S}:["<member>","<idempotency key>"]`, set
with NX (the first stored wins) and PX (it expires a window after the receipt's time), and a
per-shard sorted set `rct:{S}:expiry` of the receipts themselves, scored by expiry, which a
load pages through and every write trims of up to 1,000 expired entries; the index itself
expires with its latest receipt. What Redis holds is bounded by the receipts of the window.
A script call touches one shard's keys only, so one hash slot.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from crdt import CodecError, PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.durable import (
    RECEIPT_PAGE,
    DurableError,
    Entry,
    ReceiptEntry,
    key_of,
    member,
    state_of,
)

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
RECEIPT_SCRIPT = """
local now = tonumber(ARGV[1])
for k = 2, #KEYS do
  local expiry, record = ARGV[2 * k - 1], ARGV[2 * k]
  local ttl = tonumber(expiry) - now
  if ttl > 0 and redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl) then
    redis.call('ZADD', KEYS[1], expiry, record)
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
local keep = tonumber(ARGV[2])
if keep > 0 and redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return #old
"""
KEYS_PER_CALL = 200  # bounds one script's run time, so Redis never stalls long on us
# Seconds a Redis that stops answering (paused, partitioned, overloaded) may hold a call before
# it fails (--redis-timeout-s); without it (redis-py's default) a silent Redis hangs the
# write-behind forever and /readyz never reports it. It bounds the connect and each reply, so a
# large flush is not cut short, and the whole of a ping or an incarnation call.
SOCKET_TIMEOUT_S = 5.0
# What redis-py raises when Redis fails: RedisError for both clients, and for Redis Cluster
# also RedisClusterException ("cannot be connected", slots not covered), which is not a
# RedisError; OSError and TimeoutError from the socket beneath. All of it is a DurableError.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
RECEIPTS_PER_CALL = 500  # receipts per script call, for the same reason as KEYS_PER_CALL


def _text(error: BaseException) -> str:
    """An error as a line of text; a timeout's own text is empty."""
    return str(error) or f"{type(error).__name__} after the Redis timeout"


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


def _receipt_index(shard: int) -> str:
    return f"rct:{{{shard}}}:expiry"


def _receipt_args(
    shard: int, entries: Sequence[ReceiptEntry], window_ms: int, now_ms: int
) -> tuple[list[str], list[Any]]:
    keys: list[str] = [_receipt_index(shard)]
    args: list[Any] = [now_ms, 0]
    latest = 0
    names: dict[Key, str] = {}  # a batch's receipts share a counter: one dump each
    for key, _, idem, receipt in entries:
        name = names.get(key)
        if name is None:
            name = names[key] = member(key)
        expiry = receipt.at_ms + window_ms
        latest = max(latest, expiry)
        keys.append(f"rct:{{{shard}}}:" + json.dumps([name, idem], ensure_ascii=False))
        record = [name, idem, *receipt.to_wire()]
        args += (expiry, json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    args[1] = latest - now_ms  # the index lives as long as its latest receipt
    return keys, args


def _parse_receipt(raw: bytes, shard: int, keys: dict[str, Key]) -> ReceiptEntry:
    try:
        record = json.loads(raw)
        if not isinstance(record, list) or len(record) != 6:
            raise ValueError("a stored receipt is [counter, idempotency key, receipt...]")
        name, idem = record[0], record[1]
        if type(name) is not str or type(idem) is not str or not idem:
            raise ValueError("bad counter or idempotency key")
        receipt = Receipt.from_wire(record[2:])
    except (ValueError, CodecError) as error:
        raise DurableError(f"corrupt receipt in Redis: {error}") from error
    key = keys.get(name)
    if key is None:
        key = keys[name] = key_of(name)
    return key, shard, idem, receipt


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
    def __init__(self, url: str, cluster: bool, timeout_s: float = SOCKET_TIMEOUT_S) -> None:
        self.name = "redis-cluster" if cluster else "redis"
        self._cluster = cluster
        self.timeout_s = timeout = timeout_s
        self._client: Any = (
            RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            if cluster
            else redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        )
        self._merge = self._client.register_script(MERGE_SCRIPT)
        self._incarnation = self._client.register_script(INCARNATION_SCRIPT)
        self._receipts = self._client.register_script(RECEIPT_SCRIPT)

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
        except REDIS_ERRORS as error:
            raise DurableError(f"redis write failed: {_text(error)}") from error

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
        except REDIS_ERRORS as error:
            raise DurableError(f"redis load failed: {_text(error)}") from error
        return [
            (key_of(name), _parse_hash(raw))
            for (_, name), raw in zip(names, hashes, strict=True)
            if raw
        ]

    async def write_receipts(
        self, entries: Sequence[ReceiptEntry], window_ms: int, now_ms: int
    ) -> int:
        """One script call per shard and RECEIPTS_PER_CALL receipts; see RECEIPT_SCRIPT.
        With no receipts it trims nothing: keys expire by themselves, and so does an index
        a window after its latest receipt."""
        by_shard: dict[int, list[ReceiptEntry]] = defaultdict(list)
        for entry in entries:
            by_shard[entry[1]].append(entry)
        calls = {
            shard: [
                _receipt_args(shard, found[start : start + RECEIPTS_PER_CALL], window_ms, now_ms)
                for start in range(0, len(found), RECEIPTS_PER_CALL)
            ]
            for shard, found in by_shard.items()
        }
        try:
            if self._cluster:
                # Shards side by side, one shard's calls in turn: they all go to one node, and
                # redis-py's cluster client fails many concurrent first calls on one connection.
                per_shard = await asyncio.gather(*(self._in_turn(c) for c in calls.values()))
                trimmed = [count for counts in per_shard for count in counts]
            elif calls:
                async with self._client.pipeline(transaction=False) as pipe:
                    for shard_calls in calls.values():
                        for keys, args in shard_calls:
                            await self._receipts(keys=keys, args=args, client=pipe)
                    trimmed = await pipe.execute()
            else:
                trimmed = []
        except REDIS_ERRORS as error:
            raise DurableError(f"redis receipt write failed: {_text(error)}") from error
        return sum(int(count) for count in trimmed)

    async def _in_turn(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return [await self._receipts(keys=keys, args=args) for keys, args in calls]

    async def load_receipts(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReceiptEntry]]:
        """Pages each shard's index from its latest expiry down (ranks counted from the top
        move only when a receipt is added above the cursor, which repeats one, never skips
        one) and stops at the first expired entry."""
        keys: dict[str, Key] = {}  # member -> key, parsed once per counter
        starts = {shard: 0 for shard in sorted(shards)}
        per_shard = max(100, RECEIPT_PAGE // max(1, len(starts)))
        while starts:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for shard, start in starts.items():
                        pipe.zrevrange(
                            _receipt_index(shard), start, start + per_shard - 1, withscores=True
                        )
                    pages = await pipe.execute()
            except REDIS_ERRORS as error:
                raise DurableError(f"redis receipt load failed: {_text(error)}") from error
            page: list[ReceiptEntry] = []
            following: dict[int, int] = {}
            for (shard, start), rows in zip(starts.items(), pages, strict=True):
                for record, expiry in rows:
                    if expiry < now_ms:
                        break
                    page.append(_parse_receipt(record, shard, keys))
                else:
                    if len(rows) == per_shard:
                        following[shard] = start + per_shard
            if page:
                yield page
            starts = following

    async def last_incarnation(self, node_id: str, current: int) -> int:
        try:
            async with asyncio.timeout(self.timeout_s):
                known = await self._incarnation(keys=[f"ctr:incarnation:{node_id}"], args=[current])
        except REDIS_ERRORS as error:
            raise DurableError(f"redis incarnation failed: {_text(error)}") from error
        return int(known)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()
        except REDIS_ERRORS as error:
            raise DurableError(f"redis unreachable: {_text(error)}") from error

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.aclose()
        except REDIS_ERRORS:
            pass  # a Redis that is gone holds nothing of ours to close

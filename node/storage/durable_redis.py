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

A flush is one script call per shard and up to ENTRIES_PER_CALL entries (redis_flush.py):
a counter's state and its receipts always go in the same call, which runs atomically, so a
node killed mid-flush never leaves an increment in Redis without its receipt. On Redis
Cluster, CONCURRENT_SHARDS shards' calls run side by side (each shard's in turn), a NOSCRIPT
(an emptied script cache: a master restarted, a replica promoted) loads the script once for
all of them and retries, and a flush that fails raises only once every shard's calls ended,
so nothing of it lands after the later flush that writes it again.

Marks: `ctr:{S}:mark:<node>`, set by a node for each shard it holds (write_behind.py), so a
node notices a Redis that came back empty (FLUSHALL, a restart without persistence, a
failover to an empty replica) and writes again what it answers for, its incarnation record
(`ctr:incarnation:<node>`) among it.

Reservations (this node's grants of idempotency keys; Redis is shared, so they are keyed by
the granting node): a hash `rsv:{S}:<node>` of ["<member>","<idempotency key>"] ->
[holder node, token, until ms], and a sorted set `rsv:{S}:<node>:expiry` of the same fields
by expiry, trimmed of up to 1,000 lapsed ones per call; both expire with their latest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from crdt import CodecError, PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.durable import (
    RECEIPT_PAGE,
    DurableError,
    Entry,
    ReceiptEntry,
    ReservationEntry,
    SlotPage,
    SlotRow,
    key_of,
    state_of,
)
from node.storage.receipt_book import Reservation
from node.storage.redis_flush import (
    FLUSH_SCRIPT,
    Call,
    counter_key,
    flush_calls,
    index_key,
    mark_key,
    receipt_index,
    reservations_key,
)

INCARNATION_SCRIPT = """
local known = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > known then redis.call('SET', KEYS[1], ARGV[1]) end
return known
"""
# Seconds a Redis that stops answering (paused, partitioned, overloaded) may hold a call before
# it fails (--redis-timeout-s); without it (redis-py's default) a silent Redis hangs the
# write-behind forever and /readyz never reports it. It bounds the connect and each reply, so a
# large flush is not cut short, and the whole of a ping or an incarnation call.
SOCKET_TIMEOUT_S = 5.0
LOAD_COUNTERS = 20_000  # counters per page of a load: the store takes a page per loop turn
# Redis Cluster: shards whose script calls run side by side in a flush. redis-py opens a
# connection per concurrent call and allows 100 per node (MaxConnectionsError past it); 256
# shards at once, each loading the script on every primary after a NOSCRIPT, went past it.
CONCURRENT_SHARDS = 32
# What redis-py raises when Redis fails: RedisError for both clients, and for Redis Cluster
# also RedisClusterException ("cannot be connected", slots not covered), which is not a
# RedisError; OSError and TimeoutError from the socket beneath. All of it is a DurableError.
# And AttributeError: the asyncio cluster client, whose nodes go away under it, trips on a
# connection or node it has already dropped ("'NoneType' object has no attribute
# 'writelines'", seen when the whole cluster stopped; redis/redis-py#3835), and under uvloop
# RuntimeError ("unable to perform operation on <TCPTransport closed=True ...>; the handler is
# closed", seen in CI when the whole cluster stopped; MagicStack/uvloop#506, the same race as
# redis/redis-py#4287). The calls these guard are Redis calls only, so no bug of ours hides
# behind it.
REDIS_ERRORS = (
    RedisError, RedisClusterException, OSError, TimeoutError, AttributeError, RuntimeError
)  # fmt: skip


def _text(error: BaseException) -> str:
    """An error as a line of text; a timeout's own text is empty."""
    return str(error) or f"{type(error).__name__} after the Redis timeout"


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


def _parse_reservation(
    field: bytes, value: bytes, shard: int, keys: dict[str, Key]
) -> tuple[Key, int, str, Reservation]:
    try:
        name, idem = json.loads(field)
        node, token, until_ms = json.loads(value)
        if not all(type(v) is str and v for v in (name, idem, node, token)):
            raise ValueError("bad counter, key, node or token")
        if type(until_ms) is not int:
            raise ValueError("bad expiry")
    except (ValueError, TypeError) as error:
        raise DurableError(f"corrupt reservation in Redis: {error}") from error
    key = keys.get(name) or keys.setdefault(name, key_of(name))
    return key, shard, idem, Reservation(node, token, until_ms)


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
    def __init__(
        self, url: str, cluster: bool, timeout_s: float = SOCKET_TIMEOUT_S, owner: str = "-"
    ) -> None:
        self.name = "redis-cluster" if cluster else "redis"
        self.shared = True
        self._cluster = cluster
        self.timeout_s = timeout = timeout_s
        self._client: Any = (
            RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            if cluster
            else redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        )
        self._flush = self._client.register_script(FLUSH_SCRIPT)
        self._incarnation = self._client.register_script(INCARNATION_SCRIPT)
        self._shards_at_once = asyncio.Semaphore(CONCURRENT_SHARDS)
        self._script_loading = asyncio.Lock()
        self._script_loads = 0  # script loads after a NOSCRIPT so far
        self._recorded: dict[str, int] = {}  # node id -> the highest incarnation recorded
        self.owner = owner  # reservations are this node's grants: keyed by its id

    async def write_changes(
        self,
        entries: Sequence[Entry],
        receipts: Sequence[ReceiptEntry],
        reservations: Sequence[ReservationEntry],
        window_ms: int,
        now_ms: int,
    ) -> int:
        """One script call per shard and ENTRIES_PER_CALL entries (see FLUSH_SCRIPT); each
        call is atomic and holds a counter's state with all its receipts."""
        calls = flush_calls(self.owner, entries, receipts, reservations, window_ms, now_ms)
        try:
            if self._cluster:
                # Shards side by side, one shard's calls in turn: they all go to one node, and
                # redis-py's cluster client fails many concurrent first calls on one connection.
                # Every shard's calls end before the flush raises: one still sending after the
                # persister put the flush back could land after a later flush (a reservation
                # that flush deleted came back).
                per_shard = await asyncio.gather(
                    *(self._in_turn(c) for c in calls.values()), return_exceptions=True
                )
                failed = [error for error in per_shard if isinstance(error, BaseException)]
                if failed:
                    raise failed[0]
                dropped = [
                    count for counts in per_shard if isinstance(counts, list) for count in counts
                ]
            elif calls:
                async with self._client.pipeline(transaction=False) as pipe:
                    for shard_calls in calls.values():
                        for call in shard_calls:
                            keys, args = call.script()
                            await self._flush(keys=keys, args=args, client=pipe)
                    dropped = await pipe.execute()
            else:
                dropped = []
        except REDIS_ERRORS as error:
            raise DurableError(f"redis write failed: {_text(error)}") from error
        return sum(int(count) for count in dropped)

    async def _in_turn(self, calls: list[Call]) -> list[Any]:
        async with self._shards_at_once:
            return [
                await self._flush_call(keys, args) for keys, args in (c.script() for c in calls)
            ]

    async def _flush_call(self, keys: list[str], args: list[Any]) -> Any:
        """One script call on Redis Cluster. After a NOSCRIPT (a master restarted, a replica
        promoted: its script cache is empty) the script is loaded once, on every primary, for
        all the calls that got one meanwhile, and the call is retried (redis-py's Script loads
        it again for each of them)."""
        loads = self._script_loads
        try:
            return await self._client.evalsha(self._flush.sha, len(keys), *keys, *args)
        except NoScriptError:
            async with self._script_loading:
                if self._script_loads == loads:
                    await self._client.script_load(FLUSH_SCRIPT)
                    self._script_loads += 1
            return await self._client.evalsha(self._flush.sha, len(keys), *keys, *args)

    async def write(self, entries: Sequence[Entry]) -> None:
        await self.write_changes(entries, (), (), 0, int(time.time() * 1000))

    async def _load(self, shards: Collection[int]) -> list[tuple[int, Key, PNCounter]]:
        """(shard, key, state) of every counter of these shards."""
        shards = sorted(shards)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.smembers(index_key(shard))
                members = await pipe.execute()
            names = [
                (shard, raw.decode())
                for shard, found in zip(shards, members, strict=True)
                for raw in found
            ]
            async with self._client.pipeline(transaction=False) as pipe:
                for shard, name in names:
                    pipe.hgetall(counter_key(shard, name))
                hashes = await pipe.execute()
        except REDIS_ERRORS as error:
            raise DurableError(f"redis load failed: {_text(error)}") from error
        return [
            (shard, key_of(name), _parse_hash(raw))
            for (shard, name), raw in zip(names, hashes, strict=True)
            if raw
        ]

    async def load(self, shards: Collection[int]) -> list[tuple[Key, PNCounter]]:
        return [(key, state) for _, key, state in await self._load(shards)]

    async def load_slots(self, shards: Collection[int]) -> AsyncIterator[list[SlotRow]]:
        """load's states as slot rows, in pages of at most LOAD_COUNTERS counters."""
        loaded = await self._load(shards)
        for start in range(0, len(loaded), LOAD_COUNTERS):
            page: list[SlotRow] = []
            for shard, key, state in loaded[start : start + LOAD_COUNTERS]:
                page += ((key, shard, actor, *state.slot(actor)) for actor in state.actors())
            yield page

    async def load_pages(self, shards: Collection[int]) -> AsyncIterator[SlotPage]:
        async for page in self.load_slots(shards):
            yield page

    async def write_receipts(
        self, entries: Sequence[ReceiptEntry], window_ms: int, now_ms: int
    ) -> int:
        """Receipt keys expire by themselves (PX), and so does an index a window after its
        latest receipt; each call also trims up to 1,000 expired index entries."""
        return await self.write_changes((), entries, (), window_ms, now_ms)

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
                            receipt_index(shard), start, start + per_shard - 1, withscores=True
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

    async def load_reservations(
        self, shards: Collection[int], now_ms: int
    ) -> AsyncIterator[list[ReservationEntry]]:
        """Scans each shard's hash of this node's reservations, RECEIPT_PAGE at a time."""
        keys: dict[str, Key] = {}
        page: list[ReservationEntry] = []
        for shard in sorted(shards):
            cursor = 0
            while True:
                try:
                    cursor, found = await self._client.hscan(
                        reservations_key(shard, self.owner), cursor, count=RECEIPT_PAGE
                    )
                except REDIS_ERRORS as error:
                    raise DurableError(f"redis reservation load failed: {_text(error)}") from error
                for field, value in found.items():
                    entry = _parse_reservation(field, value, shard, keys)
                    if entry[3].until_ms >= now_ms:
                        page.append(entry)
                while len(page) >= RECEIPT_PAGE:  # HSCAN's count is a hint, not a bound
                    yield page[:RECEIPT_PAGE]
                    page = page[RECEIPT_PAGE:]
                if not cursor:
                    break
        if page:
            yield page

    async def stored_shards(self) -> set[int]:
        """None: the cluster shares these keys, and the owners load them (durable.py)."""
        return set()

    async def forget_shard(self, shard: int) -> None:
        """Nothing: the owners' copies are these very keys."""

    async def last_incarnation(self, node_id: str, current: int) -> int:
        try:
            async with asyncio.timeout(self.timeout_s):
                known = await self._incarnation(keys=[f"ctr:incarnation:{node_id}"], args=[current])
        except REDIS_ERRORS as error:
            raise DurableError(f"redis incarnation failed: {_text(error)}") from error
        self._recorded[node_id] = max(current, self._recorded.get(node_id, 0))
        return int(known)

    async def unmarked_shards(self, shards: Collection[int]) -> list[int]:
        shards = sorted(shards)
        keys = [mark_key(shard, self.owner) for shard in shards]
        client = self._client
        try:
            async with asyncio.timeout(self.timeout_s):
                found = await (client.mget_nonatomic(keys) if self._cluster else client.mget(keys))
        except REDIS_ERRORS as error:
            raise DurableError(f"redis mark check failed: {_text(error)}") from error
        return [shard for shard, mark in zip(shards, found, strict=True) if mark is None]

    async def mark_shards(self, shards: Collection[int]) -> None:
        marks, client = {mark_key(shard, self.owner): 1 for shard in shards}, self._client
        try:
            async with asyncio.timeout(self.timeout_s):
                await (client.mset_nonatomic(marks) if self._cluster else client.mset(marks))
        except REDIS_ERRORS as error:
            raise DurableError(f"redis mark write failed: {_text(error)}") from error

    async def record_incarnations_again(self) -> None:
        for node_id, incarnation in list(self._recorded.items()):
            await self.last_incarnation(node_id, incarnation)

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

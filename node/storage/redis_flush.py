"""One flush to Redis (durable_redis.py): the script that writes it and the calls it takes.

A flush is one FLUSH_SCRIPT call per shard and up to ENTRIES_PER_CALL entries: it merges the
counters (per-slot maximum of decimal strings), stores their receipts (SET NX PX, indexed by
expiry) and this node's reservations, deletes the ended ones, and trims up to 1,000 expired
receipts and lapsed reservations. Every key of a call carries the shard's hash tag {S}, so a
call runs on one Redis Cluster slot; a counter's state and all its receipts go in one call,
and a script runs atomically, so a node killed mid-flush never leaves an increment stored
without its receipt (which, restarted, would answer "void" to a retry: a double).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.durable import Entry, ReceiptEntry, ReservationEntry, member
from node.storage.receipt_book import Reservation

FLUSH_SCRIPT = """
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function stretch(key, until_ms, now)
  if until_ms > now and redis.call('PTTL', key) < until_ms - now then
    redis.call('PEXPIRE', key, until_ms - now)
  end
end
local now = tonumber(ARGV[1])
local counters, receipts, reservations = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local arg, k = 5, 5
for _ = 1, counters do
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
  k = k + 1
end
local latest = 0
for _ = 1, receipts do
  local expiry, record = tonumber(ARGV[arg]), ARGV[arg + 1]
  if expiry > now and redis.call('SET', KEYS[k], '1', 'NX', 'PX', expiry - now) then
    redis.call('ZADD', KEYS[2], ARGV[arg], record)
  end
  if expiry > latest then latest = expiry end
  arg = arg + 2
  k = k + 1
end
local held = 0
for _ = 1, reservations do
  local field, until_ms, value = ARGV[arg], tonumber(ARGV[arg + 1]), ARGV[arg + 2]
  if until_ms == 0 then
    redis.call('HDEL', KEYS[3], field)
    redis.call('ZREM', KEYS[4], field)
  elseif until_ms > now then
    redis.call('HSET', KEYS[3], field, value)
    redis.call('ZADD', KEYS[4], ARGV[arg + 1], field)
    if until_ms > held then held = until_ms end
  end
  arg = arg + 3
end
stretch(KEYS[2], latest, now)
stretch(KEYS[3], held, now)
stretch(KEYS[4], held, now)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
if #old > 0 then redis.call('ZREM', KEYS[2], unpack(old)) end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
if #lapsed > 0 then
  redis.call('HDEL', KEYS[3], unpack(lapsed))
  redis.call('ZREM', KEYS[4], unpack(lapsed))
end
return #old + #lapsed
"""
# Counters, receipts and reservations per script call: bounds one script's run time, so Redis
# never stalls long on us; a counter and its receipts are never split over two calls.
ENTRIES_PER_CALL = 500


def counter_key(shard: int, name: str) -> str:
    return f"ctr:{{{shard}}}:{name}"


def index_key(shard: int) -> str:
    return f"ctr:{{{shard}}}:keys"


def mark_key(shard: int, owner: str) -> str:
    """Present while Redis holds what `owner` wrote of the shard (durable_redis.py)."""
    return f"ctr:{{{shard}}}:mark:{owner}"


def receipt_index(shard: int) -> str:
    return f"rct:{{{shard}}}:expiry"


def reservations_key(shard: int, owner: str) -> str:
    return f"rsv:{{{shard}}}:{owner}"


Unit = tuple[Key, PNCounter | None, list[tuple[str, Receipt]]]  # a counter, written whole


class Call:
    """One script call's KEYS and ARGV (see FLUSH_SCRIPT), for one shard."""

    def __init__(self, shard: int, owner: str, now_ms: int) -> None:
        self.shard, self.size = shard, 0
        held = reservations_key(shard, owner)
        self.index = [index_key(shard), receipt_index(shard), held, held + ":expiry"]
        self.counter_keys: list[str] = []
        self.receipt_keys: list[str] = []
        self.head: list[Any] = [now_ms, 0, 0, 0]
        self.counters: list[Any] = []
        self.receipts: list[Any] = []
        self.reservations: list[Any] = []

    def add_unit(self, unit: Unit, window_ms: int) -> None:
        key, state, found = unit
        name = member(key)
        if state is not None:
            self.counter_keys.append(counter_key(self.shard, name))
            fields: list[Any] = []
            for prefix, counter in (("p:", state.p), ("n:", state.n)):
                for actor, count in counter.slots.items():
                    fields += (prefix + actor, str(count))
            self.counters += (name, len(fields) // 2, *fields)
            self.head[1] += 1
        for idem, receipt in found:
            self.receipt_keys.append(
                f"rct:{{{self.shard}}}:" + json.dumps([name, idem], ensure_ascii=False)
            )
            record = [name, idem, *receipt.to_wire()]
            self.receipts += (
                receipt.at_ms + window_ms,
                json.dumps(record, separators=(",", ":"), ensure_ascii=False),
            )
        self.head[2] += len(found)
        self.size += 1 + len(found)

    def add_reservation(self, key: Key, idem: str, held: Reservation | None) -> None:
        field = json.dumps([member(key), idem], ensure_ascii=False)
        if held is None:
            self.reservations += (field, 0, "")
        else:
            value = json.dumps([held.node, held.token, held.until_ms], ensure_ascii=False)
            self.reservations += (field, held.until_ms, value)
        self.head[3] += 1
        self.size += 1

    def script(self) -> tuple[list[str], list[Any]]:
        keys = self.index + self.counter_keys + self.receipt_keys
        return keys, self.head + self.counters + self.receipts + self.reservations


def flush_calls(
    owner: str,
    entries: Sequence[Entry],
    receipts: Sequence[ReceiptEntry],
    reservations: Sequence[ReservationEntry],
    window_ms: int,
    now_ms: int,
) -> dict[int, list[Call]]:
    """Per shard, its script calls: a counter's state and all its receipts in one call."""
    units: dict[int, dict[Key, Unit]] = defaultdict(dict)
    for key, shard, state in entries:
        units[shard][key] = (key, state, [])
    for key, shard, idem, receipt in receipts:
        unit = units[shard].get(key)
        if unit is None:
            unit = units[shard][key] = (key, None, [])
        unit[2].append((idem, receipt))
    held_by_shard: dict[int, list[ReservationEntry]] = defaultdict(list)
    for entry in reservations:
        held_by_shard[entry[1]].append(entry)
    calls: dict[int, list[Call]] = {}
    for shard in units.keys() | held_by_shard.keys():
        shard_calls = calls[shard] = [Call(shard, owner, now_ms)]
        for unit in units.get(shard, {}).values():
            if shard_calls[-1].size >= ENTRIES_PER_CALL:
                shard_calls.append(Call(shard, owner, now_ms))
            shard_calls[-1].add_unit(unit, window_ms)
        for key, _, idem, held in held_by_shard.get(shard, ()):
            if shard_calls[-1].size >= ENTRIES_PER_CALL:
                shard_calls.append(Call(shard, owner, now_ms))
            shard_calls[-1].add_reservation(key, idem, held)
    return calls

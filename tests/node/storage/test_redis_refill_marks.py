"""A shared durable replica (Redis) that came back empty is written again even when a Redis
call fails during the refill (the incarnation call timing out right after a failover): the
lost shards' slots are marked for a flush first, their marks written again only by the
flush that carries their data, and the incarnation recorded until that succeeds. Before,
the marks went back first and the failure left them there with nothing marked, so no later
check found them missing and the lost counters were never written again. (A fake replica
with marks: the path through a real Redis is tests/cluster/test_redis_emptied.py.)"""

from __future__ import annotations

import pytest

from crdt import PNCounter
from node.storage import write_behind
from node.storage.durable import DurableError
from node.storage.store import CounterStore
from node.storage.write_behind import Persister

KEY = ("t", "ns", "c")


class _FakeRedis:
    """A shared replica in memory with marks, that can be emptied like a FLUSHALL."""

    name = "fake-redis"
    shared = True

    def __init__(self) -> None:
        self.data: dict[tuple[str, str, str], PNCounter] = {}
        self.marks: set[int] = set()
        self.incarnation_failures = 0

    async def write_changes(self, entries, receipts, reservations, window_ms, now_ms):  # type: ignore[no-untyped-def]
        for key, _shard, state in entries:
            old = self.data.get(key)
            self.data[key] = state if old is None else old.merge(state)
        return 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def unmarked_shards(self, shards):  # type: ignore[no-untyped-def]
        return [s for s in sorted(shards) if s not in self.marks]

    async def mark_shards(self, shards):  # type: ignore[no-untyped-def]
        self.marks.update(shards)

    async def record_incarnations_again(self) -> None:
        if self.incarnation_failures:
            self.incarnation_failures -= 1
            raise DurableError("redis incarnation failed: Timeout")

    def flushall(self) -> None:
        self.data.clear()
        self.marks.clear()


async def test_an_emptied_redis_is_refilled_even_if_one_call_of_the_refill_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(write_behind, "PING_INTERVAL_S", 0.0)  # check the marks every flush
    store = CounterStore(lambda key: 0)
    durable = _FakeRedis()
    persister = Persister(store, durable, interval_s=60)  # type: ignore[arg-type]
    store.increment(KEY, "me:1", 5)
    await persister.flush()
    assert KEY in durable.data and durable.marks == {0}

    durable.flushall()  # Redis comes back empty
    durable.incarnation_failures = 1  # one Redis call of the refill times out
    await persister.flush()
    assert not persister.healthy  # that flush failed...
    for _ in range(3):  # ...and the next ones succeed
        await persister.flush()
    assert persister.healthy
    assert KEY in durable.data, "the counter acknowledged before the loss is never rewritten"
    await persister.close()

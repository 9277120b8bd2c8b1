"""The persister's backlog counts what a flush has taken but not yet written: a flush stuck
on an outage (a paused Redis, a slow disk) must not make the backlog read 0, which /readyz,
the metrics and the alerts report."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt import PNCounter
from node.storage.durable_sqlite import SqliteReplica
from node.storage.store import CounterStore
from node.storage.write_behind import Persister

KEY = ("t", "ns", "c")


class _Stuck(SqliteReplica):
    """A real SQLite replica whose writes wait until the test lets them through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def write_changes(self, entries, *rest):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.gate.wait()
        return await super().write_changes(entries, *rest)


async def test_a_flush_in_flight_still_counts_in_the_backlog(tmp_path: Path) -> None:
    store = CounterStore(lambda key: 0)
    durable = _Stuck(tmp_path / "counters.sqlite3")
    persister = Persister(store, durable, interval_s=60)
    store.increment(KEY, "me:1", 5)
    assert persister.backlog == 1
    flush = asyncio.ensure_future(persister.flush())
    await asyncio.wait_for(durable.entered.wait(), 5)
    assert store.dirty_count() == 0  # taken by the flush...
    assert persister.backlog == 1  # ...but not yet durable
    durable.gate.set()
    await asyncio.wait_for(flush, 5)
    assert persister.backlog == 0
    assert dict(await durable.load({0})) == {KEY: PNCounter.empty().increment("me:1", 5)}
    await persister.close()


async def test_a_stop_that_cancels_a_flush_in_flight_loses_nothing(tmp_path: Path) -> None:
    """A SIGTERM cancels the persister's loop (App.close) while its flush waits on the
    durable replica (a Redis round trip); the last flush must still write what that flush
    took, and a sync write waiting for it is settled by the last flush, not left hanging."""
    store = CounterStore(lambda key: 0)
    durable = _Stuck(tmp_path / "counters.sqlite3")
    persister = Persister(store, durable, interval_s=60)
    loop = asyncio.ensure_future(persister.run())
    store.increment(KEY, "me:1", 5)
    waiter = asyncio.ensure_future(persister.durable_now(5))  # a sync write's wait
    await asyncio.wait_for(durable.entered.wait(), 5)
    assert store.dirty_count() == 0  # taken by the flush in flight

    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert persister.backlog == 1  # taken back, not dropped
    assert not waiter.done()
    durable.gate.set()
    await persister.close()

    assert dict(await SqliteReplica(tmp_path / "counters.sqlite3").load({0})) == {
        KEY: PNCounter.empty().increment("me:1", 5)
    }
    await asyncio.wait_for(waiter, 5)  # settled by the last flush

"""Back-pressure of the write-behind: while more counters than max_backlog wait to be
written (changed, or in the flush under way), an acknowledgement waits for flushes, up to
its timeout; so a SIGTERM's last flush carries at most about that many."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from node.storage.durable import DurableError
from node.storage.durable_sqlite import SqliteReplica
from node.storage.store import CounterStore
from node.storage.write_behind import Persister
from tests.support import eventually


class GatedReplica(SqliteReplica):
    """The SQLite replica, whose writes wait for `gate` (set: they go at once)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def write_changes(self, *args: Any) -> int:
        await self.gate.wait()
        if self.failing:
            raise DurableError("down")
        return await super().write_changes(*args)


def _change(store: CounterStore, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        store.increment(("t", "ns", f"c{index}"), "n1:1", 1)


async def _running(persister: Persister) -> asyncio.Task[None]:
    return asyncio.create_task(persister.run())


async def _stop(task: asyncio.Task[None], replica: SqliteReplica) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await replica.close()


async def test_an_acknowledgement_waits_while_the_backlog_is_past_its_bound(tmp_path: Path):
    store = CounterStore(lambda key: 0)
    replica = GatedReplica(tmp_path / "durable.sqlite3")
    persister = Persister(store, replica, 0.05, max_backlog=10)
    task = await _running(persister)
    try:
        _change(store, 5)
        await asyncio.wait_for(persister.below_backlog(5.0), 0.5)  # within the bound
        assert persister.pressure_waits == 0
        replica.gate.clear()
        _change(store, 20, start=5)
        waiting = asyncio.create_task(persister.below_backlog(5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done() and persister.backlog >= 20  # in the flush under way
        replica.gate.set()
        await asyncio.wait_for(waiting, 2.0)
        assert persister.backlog == 0 and persister.pressure_waits == 1
        assert len(dict(await replica.load({0}))) == 25
    finally:
        await _stop(task, replica)


@pytest.mark.parametrize("bound, failing", [(0, False), (10, True)])
async def test_no_bound_or_an_unhealthy_replica_holds_no_acknowledgement(
    tmp_path: Path, bound: int, failing: bool
):
    store = CounterStore(lambda key: 0)
    replica = GatedReplica(tmp_path / "durable.sqlite3")
    replica.failing = failing
    persister = Persister(store, replica, 60.0, max_backlog=bound)
    task = await _running(persister)
    try:
        if failing:
            _change(store, 1)
            persister._wakeup.set()
            await eventually(lambda: not persister.healthy, "a failed flush", 2.0)
        _change(store, 20)
        await asyncio.wait_for(persister.below_backlog(5.0), 0.5)
        assert persister.pressure_waits == 0 and persister.backlog >= 20
    finally:
        await _stop(task, replica)


async def test_the_wait_ends_at_its_timeout(tmp_path: Path):
    store = CounterStore(lambda key: 0)
    replica = GatedReplica(tmp_path / "durable.sqlite3")
    replica.gate.clear()  # the flush never ends
    persister = Persister(store, replica, 60.0, max_backlog=10)
    task = await _running(persister)
    try:
        _change(store, 20)
        await asyncio.wait_for(persister.below_backlog(0.2), 1.0)
        assert persister.pressure_waits == 1 and persister.backlog == 20
    finally:
        replica.gate.set()
        await _stop(task, replica)

"""The supervisor of background loops: a failed turn is logged once per streak, counted,
backed off from, and the loop carries on; a persister whose store fails in a way nobody
expected keeps its backlog and flushes it on a later turn."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from crdt import PNCounter
from node.obs.supervision import BACKOFF_MAX_S, Supervisor, backoff, every
from node.storage.durable_sqlite import SqliteReplica
from node.storage.store import CounterStore
from node.storage.write_behind import Persister
from tests.support import eventually

KEY = ("t", "ns", "c")


def test_backoff_doubles_from_the_first_pause_up_to_the_cap():
    assert backoff(0) == 0.0
    assert backoff(1) == 0.1 and backoff(2) == 0.2 and backoff(3) == 0.4
    assert backoff(10) == BACKOFF_MAX_S and backoff(10_000) == BACKOFF_MAX_S


async def _no_pause() -> None:
    await asyncio.sleep(0)


async def test_a_failing_turn_is_logged_once_per_streak_counted_and_the_loop_carries_on(
    caplog: pytest.LogCaptureFixture,
):
    supervisor = Supervisor(clock=lambda: 1234.0)
    outcomes = [RuntimeError("bug 1"), RuntimeError("bug 2"), None, KeyError("bug 3"), None]
    done: list[int] = []

    async def turn() -> None:
        outcome = outcomes[len(done)] if len(done) < len(outcomes) else None
        done.append(1)
        if outcome is not None:
            raise outcome

    caplog.set_level(logging.INFO, "counters.supervision")
    task = supervisor.start("work", turn, _no_pause)
    try:
        await eventually(lambda: len(done) > len(outcomes), "the loop to go past its failures", 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    health = supervisor.loops["work"]
    assert (health.errors, health.streak, health.failing) == (3, 0, False)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # two streaks: bug 1 + bug 2, then bug 3
    assert all(r.exc_info is not None for r in errors)  # with the traceback
    assert "background loop work failed" in errors[0].getMessage()
    backs = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert backs == [
        "background loop work is back after 2 failed turns",
        "background loop work is back after 1 failed turns",
    ]


async def test_a_failing_loop_reports_its_error_and_since_when_until_a_turn_succeeds():
    supervisor = Supervisor(clock=lambda: 1234.5)
    health = supervisor.health("gossip")
    supervisor.failed(health, ValueError("odd frame"))
    supervisor.failed(health, ValueError("odder frame"))
    assert [h.name for h in supervisor.failing()] == ["gossip"]
    assert supervisor.status() == [
        {
            "loop": "gossip",
            "failing": True,
            "errors": 2,
            "streak": 2,
            "last_error": "ValueError: odder frame",
            "since": 1234.5,
        }
    ]
    supervisor.succeeded(health)
    assert supervisor.failing() == [] and health.since is None and health.errors == 2


async def test_run_once_records_an_error_instead_of_raising_it():
    supervisor = Supervisor()

    async def step() -> None:
        raise RuntimeError("hand-off bug")

    await supervisor.run_once("handoff", step)
    assert supervisor.loops["handoff"].last_error == "RuntimeError: hand-off bug"
    await supervisor.run_once("handoff", _no_pause)
    assert not supervisor.loops["handoff"].failing


async def test_every_waits_the_rest_of_the_interval_after_the_first_turn():
    pause = every(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pause()  # the first turn starts at once
    assert loop.time() - started < 0.05
    await pause()
    assert loop.time() - started >= 0.04  # the clock's granularity


class _FailsOnce(SqliteReplica):
    """A real SQLite replica whose first write fails as a bug would (not a DurableError)."""

    failed = False

    async def write_changes(self, entries, *rest):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected bug in the backend")
        return await super().write_changes(entries, *rest)


async def test_a_persister_whose_store_fails_unexpectedly_keeps_its_backlog_and_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    store = CounterStore(lambda key: 0)
    durable = _FailsOnce(tmp_path / "counters.sqlite3")
    persister = Persister(store, durable, interval_s=0.01)
    supervisor = Supervisor()
    store.increment(KEY, "me:1", 5)
    task = supervisor.start("persister", persister.flush, persister.next_turn)
    try:
        await eventually(lambda: supervisor.loops["persister"].errors == 1, "the failure", 5)
        await eventually(lambda: persister.healthy and persister.backlog == 0, "the flush", 5)
        assert dict(await durable.load({0})) == {KEY: PNCounter.empty().increment("me:1", 5)}
        assert not supervisor.loops["persister"].failing
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await persister.close()
    assert any("background loop persister failed" in r.getMessage() for r in caplog.records)

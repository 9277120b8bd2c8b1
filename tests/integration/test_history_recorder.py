"""The history recorder on real PostgreSQL and on SQLite: what it records, its buffer, outages.

Time is an argument (the recorder's `now`), so nothing here sleeps. The PostgreSQL server is
shared by the session, so each test writes its own namespace.
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from node.history import recorder as recorder_module
from node.history.model import HistoryStore, bucket_of, iso
from node.history.postgres import PgHistory
from node.history.recorder import (
    MIN_WRITE_BATCH,
    WRITE_BATCH,
    HistoryBuffer,
    Recorder,
    next_write_batch,
)
from node.history.sqlite import SqliteHistory
from node.storage.store import CounterStore
from tests.integration.history_backends import BACKENDS, DAY0, HOUR, TENANT, open_store
from tests.integration.postgres_server import PostgresServer

# -- the recorder ---------------------------------------------------------------------------


def counters_of_two_shards() -> CounterStore:
    """Shard 0 holds the names starting with "mine", shard 1 every other name."""
    return CounterStore(lambda key: 0 if key[2].startswith("mine") else 1)


async def test_recorder_files_owned_counters_by_bucket_and_drops_the_others(
    store: HistoryStore, ns: str
) -> None:
    counters = counters_of_two_shards()
    recorder = Recorder(counters, store, lambda shard: shard == 0, flush_interval_s=10, bucket_s=60)
    await recorder.start()
    counters.increment((TENANT, ns, "mine-a"), "n1:1", 5)
    counters.increment((TENANT, ns, "theirs"), "n1:1", 9)
    await recorder.flush(now=DAY0 + 10)
    counters.increment((TENANT, ns, "mine-a"), "n1:1", 1)
    await recorder.flush(now=DAY0 + 50)  # same bucket: the newer value replaces the older
    counters.increment((TENANT, ns, "mine-a"), "n2:1", -3)
    counters.increment((TENANT, ns, "mine-b"), "n1:1", 2)
    await recorder.flush(now=DAY0 + 125)
    await recorder.flush(now=DAY0 + 190)  # nothing changed: nothing recorded
    assert await store.series(TENANT, ns, "mine-a", "minute", DAY0, DAY0 + 300) == [
        (DAY0, 6, 6),
        (DAY0 + 120, 3, -3),
    ]
    assert await store.series(TENANT, ns, "mine-b", "minute", DAY0, DAY0 + 300) == [
        (DAY0 + 120, 2, 2)
    ]
    assert await store.series(TENANT, ns, "theirs", "minute", DAY0, DAY0 + 300) == []
    status = recorder.status(now=DAY0 + 200)
    assert status["healthy"] and status["buffered"] == 0 and status["write_lag_s"] == 0
    assert status["written"] == 4 and status["store"] == store.name  # mine-a's first bucket twice


@pytest.mark.parametrize("kind", BACKENDS)
async def test_recorder_flushes_once_more_when_closed(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, ns: str
) -> None:
    counters = counters_of_two_shards()
    recorder = Recorder(
        counters,
        open_store(kind, tmp_path, request),
        lambda shard: True,
        flush_interval_s=3600,
        bucket_s=60,
    )
    counters.increment((TENANT, ns, "last-words"), "n1:1", 4)
    await recorder.close()
    reopened = open_store(kind, tmp_path, request)
    try:
        series = await reopened.series(TENANT, ns, "last-words", "day", 0, 4_000_000_000)
        assert [(value, delta) for _, value, delta in series] == [(4, 4)]
    finally:
        await reopened.close()


def test_buffer_keeps_one_value_per_counter_and_bucket_and_drops_oldest_buckets_first() -> None:
    buffer = HistoryBuffer(capacity=4)
    for bucket in (DAY0, DAY0 + 60):
        for name in ("a", "b"):
            buffer.put((TENANT, "ns", name), bucket, 1, bucket + 1.0, 1)
    buffer.put((TENANT, "ns", "a"), DAY0 + 60, 2, DAY0 + 70.0, 2)  # replaces, takes no room
    assert len(buffer) == 4 and buffer.trim() == 0
    buffer.put((TENANT, "ns", "a"), DAY0 + 120, 3, DAY0 + 121.0, 3)
    assert buffer.trim() == 1 and len(buffer) == 4 and buffer.dropped == 1
    buffer.put((TENANT, "ns", "c"), DAY0 + 120, 3, DAY0 + 122.0, 3)
    assert buffer.trim() == 1  # the oldest bucket is gone entirely now
    assert {row[3] for row in buffer.batch(100)} == {DAY0 + 60, DAY0 + 120}
    assert buffer.oldest() == DAY0 + 61.0
    written = buffer.batch(2)
    assert [row[3] for row in written] == [DAY0 + 60, DAY0 + 60]  # oldest bucket first
    buffer.put((TENANT, "ns", "a"), DAY0 + 60, 9, DAY0 + 119.0, 9)  # changed while in flight
    buffer.remove(written)
    assert [row[2:5] for row in buffer.batch(100) if row[3] == DAY0 + 60] == [("a", DAY0 + 60, 9)]
    assert len(buffer) == 3


def test_a_full_buffer_is_trimmed_in_steps_that_drop_what_one_trim_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recorder trims a full buffer step by step (a million entries cost about a second),
    yielding to the event loop between steps; cut into parts of two entries, the steps drop
    the same values: superseded ones of the oldest buckets first, then the oldest bucket's."""
    monkeypatch.setattr(recorder_module, "RECORD_CHUNK", 2)
    buffer = HistoryBuffer(capacity=5)
    for bucket, names in [(DAY0, "abcdef"), (DAY0 + 60, "abc"), (DAY0 + 120, "a")]:
        for name in names:
            buffer.put((TENANT, "ns", name), bucket, 1, bucket + 1.0, 1)
    assert len(list(buffer.trimming())) > 3
    assert len(buffer) == 5 and buffer.dropped == 5
    kept = {(row[2], row[3]) for row in buffer.batch(100)}
    assert kept == {
        ("e", DAY0),
        ("f", DAY0),
        ("b", DAY0 + 60),
        ("c", DAY0 + 60),
        ("a", DAY0 + 120),
    }


async def test_a_turn_takes_the_changed_counters_in_parts_and_loses_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ns: str
) -> None:
    """However many counters changed, a turn takes them RECORD_CHUNK at a time, yielding
    between parts, and buffers each one once."""
    monkeypatch.setattr(recorder_module, "RECORD_CHUNK", 3)
    counters = counters_of_two_shards()
    store = SqliteHistory(tmp_path / "history.sqlite3")
    recorder = Recorder(counters, store, lambda shard: True, flush_interval_s=10, bucket_s=60)
    try:
        for index in range(10):
            counters.increment((TENANT, ns, f"c{index}"), "n1:1", 1)
        await recorder.record(DAY0)  # the first turn takes the shard over
        for index in range(10):
            counters.increment((TENANT, ns, f"c{index}"), "n1:1", index + 1)
        assert await recorder.record(DAY0 + 60) == 10
        values = sorted((row[2], row[4]) for row in recorder.buffer.batch(100) if row[3] > DAY0)
        assert values == sorted((f"c{index}", index + 2) for index in range(10))
    finally:
        await store.close()


def test_the_write_batch_halves_after_a_timeout_and_grows_back_after_full_writes() -> None:
    """A store that cannot write a full batch within its timeout still gets the backlog,
    in smaller transactions; once writes succeed the batch grows back, a quarter at a time."""
    assert next_write_batch(WRITE_BATCH, WRITE_BATCH, timed_out=True) == WRITE_BATCH // 2
    assert next_write_batch(40_000, 10_000, timed_out=True) == 5_000  # below what timed out
    assert next_write_batch(MIN_WRITE_BATCH, 500, timed_out=True) == MIN_WRITE_BATCH
    assert next_write_batch(40_000, 40_000, timed_out=False) == 50_000
    assert next_write_batch(40_000, 7, timed_out=False) == 40_000  # says nothing of more rows
    assert next_write_batch(90_000, 90_000, timed_out=False) == WRITE_BATCH


# -- outages ----------------------------------------------------------------------------------


async def test_postgres_outage_buffers_writes_that_land_after_restart_exactly_once(
    postgres_server: PostgresServer, ns: str
) -> None:
    store = PgHistory(postgres_server.dsn)
    counters = counters_of_two_shards()
    recorder = Recorder(counters, store, lambda shard: True, flush_interval_s=10, bucket_s=60)
    a, b = (TENANT, ns, "a"), (TENANT, ns, "b")
    try:
        await recorder.start()
        counters.increment(a, "n1:1", 5)
        await recorder.flush(now=DAY0 + 1)
        assert recorder.status()["healthy"]
        postgres_server.stop()
        try:
            counters.increment(a, "n1:1", 3)
            await recorder.flush(now=DAY0 + 61)
            status = recorder.status(now=DAY0 + 91)
            assert not status["healthy"] and status["last_error"], status
            assert status["buffered"] == 1 and status["write_lag_s"] == 30.0, status
            counters.increment(a, "n1:1", 2)
            counters.increment(b, "n1:1", 7)
            await recorder.flush(now=DAY0 + 121)
            counters.increment(b, "n1:1", 1)
            await recorder.flush(now=DAY0 + 150)  # replaces b's buffered value in its bucket
            status = recorder.status(now=DAY0 + 151)
            assert status["buffered"] == 3 and status["write_lag_s"] == 90.0, status
        finally:
            postgres_server.start()
        await recorder.flush(now=DAY0 + 181)
        status = recorder.status(now=DAY0 + 182)
        assert status["healthy"] and status["buffered"] == 0 and status["last_error"] == ""
        assert status["written"] == 4, status
        await recorder.flush(now=DAY0 + 241)  # nothing new, nothing written twice
        status = recorder.status(now=DAY0 + 242)
        assert status["written"] == 4 and status["buffered"] == 0, status
        assert await store.series(TENANT, ns, "a", "minute", DAY0, DAY0 + 300) == [
            (DAY0, 5, 5),
            (DAY0 + 60, 8, 3),
            (DAY0 + 120, 10, 2),
        ]
        assert await store.series(TENANT, ns, "b", "minute", DAY0, DAY0 + 300) == [
            (DAY0 + 120, 8, 8)
        ]
        connection = await asyncpg.connect(postgres_server.dsn)
        try:
            stored = await connection.fetchval(
                "SELECT count(*) FROM counter_history WHERE namespace = $1", ns
            )
        finally:
            await connection.close()
        assert stored == 4
    finally:
        await recorder.close()


def test_bucket_of_and_iso() -> None:
    assert bucket_of(DAY0 + 59.9, 60) == DAY0
    assert bucket_of(DAY0 + 60, 60) == DAY0 + 60
    assert bucket_of(DAY0 + 4000, 3600) == DAY0 + HOUR
    assert iso(DAY0) == "2023-11-15T00:00:00Z"


def test_a_full_buffer_drops_superseded_values_before_a_quiet_counters_only_one() -> None:
    """During an outage, a busy counter's older buckets go before the one value of a
    counter that changed once: dropping that would leave its history wrong until it
    changes again."""
    buffer = HistoryBuffer(capacity=3)
    buffer.put((TENANT, "ns", "quiet"), DAY0, 7, DAY0 + 1.0, 7)
    for minute in (1, 2, 3):
        buffer.put((TENANT, "ns", "busy"), DAY0 + 60 * minute, minute, DAY0 + 60.0 * minute, minute)
    assert buffer.trim() == 1
    kept = {(row[2], row[3]) for row in buffer.batch(100)}
    assert kept == {("quiet", DAY0), ("busy", DAY0 + 120), ("busy", DAY0 + 180)}


async def test_a_backlog_drains_even_when_a_full_batch_outlasts_the_timeout(
    postgres_database: str,
) -> None:
    """After an outage, a backlog drains although writing WRITE_BATCH (100,000) rows takes
    PostgreSQL longer than --postgres-timeout-s (here 0.5 s, against 1-2.5 s for 100,000
    rows on a 2-core machine): a write that times out halves the batch, so the next
    flushes write it in transactions that finish in time, rather than retrying the same
    one for ever while the buffer's cap drops values."""
    history = PgHistory(postgres_database, timeout_s=0.5)
    recorder = Recorder(
        CounterStore(lambda key: 0), history, lambda shard: True, flush_interval_s=10, bucket_s=60
    )
    backlog = 150_000
    try:
        await recorder.start()
        for index in range(backlog):  # what an outage left: one value per counter, one bucket
            recorder.buffer.put((TENANT, "ns", f"c{index}"), DAY0, index, DAY0 + 1.0, index)
        deadline = time.monotonic() + 60
        flushes = 0
        while len(recorder.buffer) and flushes < 30 and time.monotonic() < deadline:
            await recorder.flush(now=DAY0 + 70 + flushes)
            flushes += 1
        status = recorder.status()
        assert status["buffered"] == 0 and status["healthy"], f"after {flushes} flushes: {status}"
        assert status["written"] == backlog and recorder.write_batch < WRITE_BATCH
    finally:
        await history.close()


async def test_a_postgres_that_came_back_empty_is_migrated_again(
    postgres_database: str,
) -> None:
    """A PostgreSQL that comes back without the schema (rebuilt, restored from nothing, a
    failover to a fresh instance) gets the migrations again, and the history resumes, rather
    than the recorder retrying a write into a missing table for ever."""
    counters = CounterStore(lambda key: 0)
    history = PgHistory(postgres_database, timeout_s=5)
    recorder = Recorder(counters, history, lambda shard: True, flush_interval_s=10, bucket_s=60)
    try:
        await recorder.start()
        counters.increment((TENANT, "ns", "c"), "n1:1", 1)
        await recorder.flush(now=DAY0 + 10)
        assert recorder.status()["healthy"] and recorder.status()["written"] == 1

        connection = await asyncpg.connect(postgres_database)
        try:
            await connection.execute("DROP TABLE counter_history; DROP TABLE schema_migrations")
        finally:
            await connection.close()
        await history.close()  # the pool's sessions ended with the old server

        counters.increment((TENANT, "ns", "c"), "n1:1", 1)
        await recorder.flush(now=DAY0 + 70)
        status = recorder.status()
        assert status["healthy"] and status["buffered"] == 0, status
        assert await history.series(TENANT, "ns", "c", "minute", DAY0, DAY0 + 120) == [
            (DAY0 + 60, 2, 2)
        ]
    finally:
        await history.close()

"""The history stores on real PostgreSQL and on SQLite: migrations, upserts, queries.

Both backends run every contract test and must give identical answers on the same data. The
PostgreSQL server is shared by the session, so each test writes its own namespace.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.history.model import HistoryStore, Row, migrations, rollups_of
from node.history.postgres import PgHistory
from node.history.sqlite import (
    MEMORY,
    ROLLUP_VALUES,
    ROLLUPS,
    TRUNCATE,
    SqliteHistory,
    rollups_exact,
)
from tests.integration.history_backends import BACKENDS, DAY, DAY0, HOUR, TENANT, open_store


def rows(
    ns: str, name: str, values: dict[int, int], at: float = 0.0, version: int = 0
) -> list[Row]:
    """History rows of one counter: bucket -> value, recorded `at` (default: bucket + 1), of
    states of `version`."""
    return [
        (TENANT, ns, name, bucket, value, at or bucket + 1.0, version)
        for bucket, value in values.items()
    ]


# -- migrations ---------------------------------------------------------------------------


def test_migrations_ship_for_both_dialects_with_the_same_versions() -> None:
    postgres, sqlite = migrations("postgres"), migrations("sqlite")
    assert [m.version for m in postgres] == [m.version for m in sqlite]
    assert postgres and all("counter_history" in m.sql for m in postgres + sqlite)


@pytest.fixture(params=BACKENDS)
async def fresh_schema(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """(backend, where): a new SQLite file, or a new, empty PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "shared.sqlite3")
        return
    yield "postgres", request.getfixturevalue("postgres_database")


async def test_migrations_are_idempotent_and_concurrent_migrators_apply_each_once(
    fresh_schema: tuple[str, str],
) -> None:
    kind, where = fresh_schema
    versions = [m.version for m in migrations(kind)]
    stores: list[HistoryStore] = [
        SqliteHistory(where) if kind == "sqlite" else PgHistory(where) for _ in range(3)
    ]
    first, second, third = stores
    try:
        applied = await asyncio.gather(first.migrate(), second.migrate())
        assert sorted(applied[0] + applied[1]) == versions  # each applied once, by one of them
        assert await first.migrate() == []
        assert await third.migrate() == []
        await third.write(rows("ns", "after-migrations", {DAY0: 1}))
        assert await first.series(TENANT, "ns", "after-migrations", "minute", DAY0, DAY0 + 60) == [
            (DAY0, 1, 1)
        ]
    finally:
        for opened in stores:
            await opened.close()


# -- writes ---------------------------------------------------------------------------------


async def test_writes_are_idempotent_upserts_that_keep_the_newest_recording(
    store: HistoryStore, ns: str
) -> None:
    batch = rows(ns, "c", {DAY0: 5, DAY0 + 60: 7}, at=DAY0 + 100.0)
    await store.write(batch)
    await store.write(batch)  # a retry of a write that landed changes nothing
    await store.write(rows(ns, "c", {DAY0: 99}, at=DAY0 + 50.0))  # recorded earlier: loses
    series = await store.series(TENANT, ns, "c", "minute", DAY0, DAY0 + 120)
    assert series == [(DAY0, 5, 5), (DAY0 + 60, 7, 2)]
    await store.write(rows(ns, "c", {DAY0: 6}, at=DAY0 + 200.0))  # recorded later: wins
    series = await store.series(TENANT, ns, "c", "minute", DAY0, DAY0 + 120)
    assert series == [(DAY0, 6, 6), (DAY0 + 60, 7, 1)]


async def test_the_later_counter_state_wins_a_bucket_whatever_the_clocks_say(
    store: HistoryStore, ns: str
) -> None:
    """Two nodes record one bucket while the coordination moves: the one whose clock runs
    ahead, or whose replica lagged, must not replace the fresher value with an older one."""
    await store.write(rows(ns, "c", {DAY0: 12}, at=DAY0 + 10.0, version=14))
    await store.write(rows(ns, "c", {DAY0: 10}, at=DAY0 + 30.0, version=12))  # older state
    assert await store.series(TENANT, ns, "c", "minute", DAY0, DAY0 + 60) == [(DAY0, 12, 12)]
    await store.write(rows(ns, "c", {DAY0: 11}, at=DAY0 + 5.0, version=15))  # newer state
    assert await store.series(TENANT, ns, "c", "minute", DAY0, DAY0 + 60) == [(DAY0, 11, 11)]
    # a row written before versions (0) loses to any versioned one, and a bigger one wins it
    await store.write(rows(ns, "old", {DAY0: 3}, at=DAY0 + 50.0))
    await store.write(rows(ns, "old", {DAY0: 4}, at=DAY0 + 40.0, version=4))
    assert await store.series(TENANT, ns, "old", "minute", DAY0, DAY0 + 60) == [(DAY0, 4, 4)]


async def test_values_at_the_int64_limits_are_exact(store: HistoryStore, ns: str) -> None:
    low, high = -(2**63), 2**63 - 1
    await store.write(rows(ns, "edge", {DAY0: high, DAY0 + 60: low + 1}))
    series = await store.series(TENANT, ns, "edge", "minute", DAY0, DAY0 + 120)
    assert [value for _, value, _ in series] == [high, low + 1]
    assert [delta for _, _, delta in series] == [high, low + 1 - high]  # past int64, exact


async def test_rollups_past_the_int64_limits_are_exact(store: HistoryStore, ns: str) -> None:
    """A period's total and a counter's change can leave int64 though every value is in it
    (SQLite's sum() refuses, PostgreSQL counts in numeric): the answer stays exact."""
    low, high = -(2**63), 2**63 - 1
    await store.write(rows(ns, "up", {DAY0: high, DAY0 + HOUR: high}))
    await store.write(rows(ns, "up-too", {DAY0: high - 1}))
    await store.write(rows(ns, "swing", {DAY0 - 60: high, DAY0 + HOUR: low}))
    hours = await store.rollups(TENANT, ns, "hour", DAY0, DAY0 + 2 * HOUR, 10)
    assert hours == [
        (DAY0, 2 * high - 1, [("up", high), ("up-too", high - 1)]),
        (DAY0 + HOUR, low - high, []),  # swing fell by 2**64 - 1 from before the range
    ]
    assert await store.rollups(TENANT, ns, "day", DAY0, DAY0 + DAY, 1) == [
        (DAY0, 2 * high - 1 + low - high, [("up", high)])
    ]


# -- queries ----------------------------------------------------------------------------------


async def test_series_by_minute_hour_and_day_with_deltas(store: HistoryStore, ns: str) -> None:
    await store.write(
        rows(
            ns,
            "c",
            {
                DAY0 - HOUR: 100,  # before the range: the first delta's base
                DAY0: 110,
                DAY0 + 60: 105,
                DAY0 + 120: 130,
                DAY0 + HOUR: 140,
                DAY0 + HOUR + 60: 150,
                DAY0 + DAY + 2 * HOUR: 90,
            },
        )
    )
    await store.write(rows(ns, "fresh", {DAY0 + 60: 7}))

    async def series(name: str, step: str, start: int, end: int) -> list[tuple[int, int, int]]:
        return await store.series(TENANT, ns, name, step, start, end)

    two_days = (DAY0, DAY0 + 2 * DAY)
    assert await series("c", "minute", *two_days) == [
        (DAY0, 110, 10),
        (DAY0 + 60, 105, -5),
        (DAY0 + 120, 130, 25),
        (DAY0 + HOUR, 140, 10),
        (DAY0 + HOUR + 60, 150, 10),
        (DAY0 + DAY + 2 * HOUR, 90, -60),
    ]
    assert await series("c", "hour", *two_days) == [
        (DAY0, 130, 30),
        (DAY0 + HOUR, 150, 20),
        (DAY0 + DAY + 2 * HOUR, 90, -60),
    ]
    assert await series("c", "day", *two_days) == [(DAY0, 150, 50), (DAY0 + DAY, 90, -60)]
    # from mid-hour: the hour keeps its label, its delta is against the value before `from`
    assert await series("c", "hour", DAY0 + 60, DAY0 + HOUR) == [(DAY0, 130, 20)]
    assert await series("c", "minute", DAY0, DAY0 + 120) == [(DAY0, 110, 10), (DAY0 + 60, 105, -5)]
    assert await series("fresh", "hour", *two_days) == [(DAY0, 7, 7)]  # no base: from zero
    assert await series("c", "minute", DAY0 + 2 * HOUR, DAY0 + 3 * HOUR) == []
    assert await series("missing", "day", *two_days) == []


async def write_rollup_data(store: HistoryStore, ns: str) -> None:
    await store.write(rows(ns, "a", {DAY0 - 60: 10, DAY0: 15, DAY0 + 1800: 20, DAY0 + HOUR: 50}))
    await store.write(rows(ns, "b", {DAY0 + 600: 40, DAY0 + HOUR + 100: 30}))
    await store.write(rows(ns, "c", {DAY0 + 120: 5, DAY0 + HOUR + 400: 5}))
    await store.write(rows(ns, "d", {DAY0 + 300: 10}))
    await store.write(rows(ns + "-other", "a", {DAY0: 1000}))  # another namespace: not counted


async def test_rollups_sum_the_namespace_and_rank_the_top_increases(
    store: HistoryStore, ns: str
) -> None:
    await write_rollup_data(store, ns)
    hours = await store.rollups(TENANT, ns, "hour", DAY0, DAY0 + 2 * HOUR, 10)
    assert hours == [
        (DAY0, 65, [("b", 40), ("a", 10), ("d", 10), ("c", 5)]),  # a before d: ties by name
        (DAY0 + HOUR, 20, [("a", 30)]),  # b fell by 10, c stayed: in the total, not the top
    ]
    top_two = await store.rollups(TENANT, ns, "hour", DAY0, DAY0 + 2 * HOUR, 2)
    assert top_two == [(DAY0, 65, [("b", 40), ("a", 10)]), (DAY0 + HOUR, 20, [("a", 30)])]
    days = await store.rollups(TENANT, ns, "day", DAY0, DAY0 + DAY, 3)
    assert days == [(DAY0, 85, [("a", 40), ("b", 30), ("d", 10)])]
    later = await store.rollups(TENANT, ns, "hour", DAY0 + HOUR, DAY0 + DAY, 10)
    assert later == [(DAY0 + HOUR, 20, [("a", 30)])]  # based on the values before the range
    assert await store.rollups(TENANT, ns, "day", DAY0 + DAY, DAY0 + 2 * DAY, 10) == []


def synthetic_rows(ns: str) -> list[Row]:
    """Three days of eight counters changing at their own pace, some going down."""
    out: list[Row] = []
    for index in range(8):
        value, bucket, pace = index * 1000 - 3000, DAY0 - 2 * HOUR, 11 * 60 + index * 420
        for step in itertools.count():
            bucket += pace + (step * 7 % 5) * 60
            if bucket >= DAY0 + 3 * DAY:
                break
            value += (step * 37 + index * 13) % 101 - (40 if index % 3 == 0 else 10)
            out.append((TENANT, ns, f"k{index}", bucket, value, bucket + 0.5, step + 1))
    return out


async def test_postgres_and_sqlite_answer_identically(
    request: pytest.FixtureRequest, tmp_path: Path, ns: str
) -> None:
    data = synthetic_rows(ns)
    stores = [open_store(kind, tmp_path, request) for kind in BACKENDS]
    try:
        for opened in stores:
            await opened.write(data)
        ranges = [
            (DAY0 - DAY, DAY0 + 4 * DAY),
            (DAY0 + 5 * HOUR + 17 * 60, DAY0 + DAY + 3 * HOUR),
            (DAY0 + 1234, DAY0 + 1234 + 600),
        ]
        answers: list[list[object]] = []
        for opened in stores:
            answer: list[object] = []
            for (start, end), step in itertools.product(ranges, ["minute", "hour", "day"]):
                for index in range(8):
                    answer.append(await opened.series(TENANT, ns, f"k{index}", step, start, end))
            for (start, end), period, top in itertools.product(ranges, ["hour", "day"], [1, 3, 10]):
                answer.append(await opened.rollups(TENANT, ns, period, start, end, top))
            answers.append(answer)
        assert answers[0] == answers[1]
        assert sum(len(part) for part in answers[0] if isinstance(part, list)) > 1000
    finally:
        for opened in stores:
            await opened.close()


async def test_sqlites_exact_rollups_answer_like_its_ranked_query(ns: str) -> None:
    """Past int64 SQLite answers rollups in Python (rollups_exact): in range, the same."""
    store = SqliteHistory(MEMORY)
    try:
        await store.write(synthetic_rows(ns))
        answers = 0
        for (start, end), period, top in itertools.product(
            [(DAY0 - DAY, DAY0 + 4 * DAY), (DAY0 + 1234, DAY0 + 1234 + 600)], TRUNCATE, [1, 3, 10]
        ):
            parameters: dict[str, object] = {"tenant": TENANT, "namespace": ns}
            parameters["format"] = TRUNCATE[period]
            parameters.update(start=start, end=end, top=top)
            ranked = rollups_of(store._fetch(ROLLUPS, parameters))
            assert rollups_exact(store._fetch(ROLLUP_VALUES, parameters), top) == ranked
            answers += len(ranked)
        assert answers > 100
    finally:
        await store.close()


async def test_merged_compact_rows_answer_like_one_store_holding_every_row(
    tmp_path: Path, ns: str
) -> None:
    """The embedded cluster's query path: nodes holding parts of the history (here split by
    bucket, as when a shard's coordinator moves, with one bucket recorded by both)."""
    data = synthetic_rows(ns)
    whole = SqliteHistory(tmp_path / "whole.sqlite3")
    parts = [SqliteHistory(tmp_path / f"part{i}.sqlite3") for i in range(3)]
    try:
        await whole.write(data)
        for position, row in enumerate(data):
            await parts[position * 3 // len(data)].write([row])
        stale = data[len(data) // 2]
        # an older state recorded by a node whose clock runs ahead: the newer state still wins
        await parts[0].write([(*stale[:4], stale[4] - 999, stale[5] + 30.0, stale[6] - 1)])
        for (start, end), step in itertools.product(
            [(DAY0 + HOUR + 5, DAY0 + 2 * DAY), (DAY0 - DAY, DAY0 + 5 * DAY)],
            ["minute", "hour", "day"],
        ):
            merged = SqliteHistory(MEMORY)
            try:
                for part in parts:
                    compact = await part.compact(TENANT, ns, None, step, start, end)
                    await merged.write([(TENANT, ns, *row) for row in compact])
                if step != "minute":
                    assert await merged.rollups(
                        TENANT, ns, step, start, end, 5
                    ) == await whole.rollups(TENANT, ns, step, start, end, 5)
                for index in range(8):
                    name = f"k{index}"
                    assert await merged.series(
                        TENANT, ns, name, step, start, end
                    ) == await whole.series(TENANT, ns, name, step, start, end)
            finally:
                await merged.close()
    finally:
        for opened in [whole, *parts]:
            await opened.close()

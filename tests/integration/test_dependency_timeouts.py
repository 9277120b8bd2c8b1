"""Every call to Redis (standalone and Cluster) and PostgreSQL fails within its timeout, as
the error its caller handles (DurableError, HistoryError), however the server fails: a
whole Redis Cluster gone (redis-py's RedisClusterException, which is not a RedisError), a
Redis or a PostgreSQL that stops answering (SIGSTOP: connected and silent).

Each test starts a server of its own, since it stops or pauses it. The bound each call is
held to is generous (a loaded machine answers late); what matters is that it ends, with
the right error, long before the next-larger timeout in play (the request's, a flush's).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from crdt import PNCounter
from node.history.model import HistoryError
from node.history.postgres import PgHistory
from node.storage.durable import DurableError
from node.storage.durable_redis import RedisReplica
from tests.integration.postgres_server import PostgresServer
from tests.integration.redis_servers import RedisCluster, RedisServer

TIMEOUT_S = 0.5  # the client's own timeout in these tests
BOUND_S = 20.0  # what a call may take here at most, on a loaded 2-core machine
KEY = ("t", "timeouts", "c")


@contextmanager
def paused(pgid: int) -> Iterator[None]:
    os.killpg(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pgid, signal.SIGCONT)


@contextmanager
def paused_postgres(server: PostgresServer) -> Iterator[None]:
    """SIGSTOP the postmaster and every backend: each backend is a session of its own
    (setsid), so no process group holds them all."""
    postmaster = server._postmaster_pid()
    assert postmaster is not None
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    pids = [postmaster, *map(int, children)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def _fails_with(error: type[Exception], call: Callable[[], Awaitable[Any]]) -> str:
    with pytest.raises(error) as failed:
        await asyncio.wait_for(call(), BOUND_S)
    return str(failed.value)


def _redis_calls(replica: RedisReplica) -> list[Callable[[], Awaitable[Any]]]:
    state = PNCounter.empty().increment("me:1", 1)

    async def load_receipts() -> None:
        async for _ in replica.load_receipts([1], 0):
            pass

    return [
        replica.ping,
        lambda: replica.write([(KEY, 1, state)]),
        lambda: replica.load([1]),
        lambda: replica.last_incarnation("n1", 3),
        load_receipts,
    ]


async def test_a_whole_redis_cluster_down_is_a_durable_error_for_every_call(tmp_path: Path):
    with RedisCluster(tmp_path / "cluster") as server:
        url = server.url
        replica = RedisReplica(url, cluster=True, timeout_s=TIMEOUT_S)
        await replica.ping()
        server.stop()
        try:
            for call in _redis_calls(replica):
                await _fails_with(DurableError, call)
            fresh = RedisReplica(url, cluster=True, timeout_s=TIMEOUT_S)  # a node starting
            await _fails_with(DurableError, lambda: fresh.last_incarnation("n1", 1))
            await fresh.close()
        finally:
            await replica.close()


async def test_a_silent_redis_fails_every_call_within_its_timeout(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as server:
        replica = RedisReplica(server.url, cluster=False, timeout_s=TIMEOUT_S)
        await replica.ping()
        assert server._process is not None
        with paused(server._process.pgid):
            for call in _redis_calls(replica):
                text = await _fails_with(DurableError, call)
                assert text.strip().endswith(":") is False, text  # says what happened
        await replica.ping()  # and works again once Redis answers
        await replica.close()


async def test_a_silent_postgres_fails_history_calls_within_their_timeout(tmp_path: Path):
    with PostgresServer(tmp_path / "postgres") as server:
        history = PgHistory(server.dsn, timeout_s=TIMEOUT_S)
        await history.migrate()
        await history.ping()
        try:
            with paused_postgres(server):
                await _fails_with(HistoryError, history.ping)
                row = ("t", "timeouts", "c", 60, 1, 61.0, 1)
                await _fails_with(HistoryError, lambda: history.write([row]))
                await _fails_with(
                    HistoryError, lambda: history.series("t", "timeouts", "c", "minute", 0, 120)
                )
            await history.ping()  # the pool reconnects once PostgreSQL answers
        finally:
            await history.close()

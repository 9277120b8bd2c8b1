"""The throwaway servers run for real: Redis, a three-master Redis Cluster and PostgreSQL
answer, kill() and restart() behave like a crash and a reboot, and failures are loud."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis
import redis.asyncio

from tests.integration import redis_servers
from tests.integration.postgres_server import PostgresServer
from tests.integration.redis_servers import RedisCluster, RedisServer
from tests.integration.servers import ServerError, wait_until
from tests.support import free_port

INCREMENT_SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"

# A process that starts a Redis, says on which port, and waits to be killed.
OWNER_SCRIPT = f"""
import sys, time
sys.path.insert(0, {str(Path(redis_servers.__file__).parents[2])!r})
from tests.integration.redis_servers import RedisServer
server = RedisServer(sys.argv[1]).start()
print(server.port, flush=True)
time.sleep(60)
"""


async def test_redis_answers_ping_and_incrby(redis_server: RedisServer) -> None:
    assert redis_server.port not in (6379, None)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.delete("test_servers:incrby")
        assert await client.incrby("test_servers:incrby", 5) == 5
        assert await client.incrby("test_servers:incrby", -7) == -2
        assert await client.config_get("save") == {"save": ""}
    finally:
        await client.aclose()


async def test_redis_cluster_runs_lua_on_one_key_per_call_across_all_masters(
    redis_cluster: RedisCluster,
) -> None:
    assert len(redis_cluster.urls) == 3
    client = redis.asyncio.RedisCluster.from_url(redis_cluster.url)
    try:
        await client.initialize()
        keys = [f"test_servers:lua:{number}" for number in range(12)]
        assert len({client.keyslot(key) for key in keys}) == len(keys)
        owners = [client.get_node_from_key(key) for key in keys]
        assert len({owner.name for owner in owners if owner is not None}) == 3
        await asyncio.gather(*(client.delete(key) for key in keys))
        for amount, key in enumerate(keys, start=1):
            assert await client.eval(INCREMENT_SCRIPT, 1, key, amount) == amount
            assert await client.eval(INCREMENT_SCRIPT, 1, key, amount) == 2 * amount
    finally:
        await client.aclose()


async def test_postgres_creates_inserts_and_selects(postgres_server: PostgresServer) -> None:
    assert postgres_server.port not in (5432, None)
    connection = await asyncpg.connect(postgres_server.dsn, timeout=10)
    try:
        assert await connection.fetchval("select current_database()") == "counters"
        assert await connection.fetchval("show fsync") == "off"
        await connection.execute(
            "create temporary table totals (name text primary key, total bigint not null)"
        )
        await connection.executemany(
            "insert into totals (name, total) values ($1, $2)", [("likes", 3), ("debt", -2)]
        )
        rows = await connection.fetch("select name, total from totals order by name")
        assert [tuple(row) for row in rows] == [("debt", -2), ("likes", 3)]
    finally:
        await connection.close()


def test_redis_restart_keeps_nothing_when_nothing_is_saved(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        port = server.port
        with redis.Redis.from_url(server.url) as client:
            client.set("test_servers:gone", "1")
        server.restart()
        assert server.port == port
        with redis.Redis.from_url(server.url) as client:
            assert client.get("test_servers:gone") is None


def test_redis_with_append_only_file_keeps_data_across_kill_and_restart(tmp_path: Path) -> None:
    options = {"appendonly": "yes", "appendfsync": "always"}
    with RedisServer(tmp_path, options=options) as server:
        with redis.Redis.from_url(server.url) as client:
            client.incrby("test_servers:kept", 41)
            client.incrby("test_servers:kept", 1)
        server.kill()
        with redis.Redis.from_url(server.url) as client, pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("test_servers:kept") == b"42"


async def test_postgres_keeps_committed_rows_across_kill_and_restart(tmp_path: Path) -> None:
    server = await asyncio.to_thread(PostgresServer(tmp_path).start)
    try:
        connection = await asyncpg.connect(server.dsn, timeout=10)
        try:
            await connection.execute("create table kept (total bigint not null)")
            await connection.execute("insert into kept values (42)")
        finally:
            await connection.close()
        await asyncio.to_thread(server.kill)
        with pytest.raises(OSError):
            await asyncpg.connect(server.dsn, timeout=10)
        await asyncio.to_thread(server.restart)
        connection = await asyncpg.connect(server.dsn, timeout=10)
        try:
            assert await connection.fetchval("select total from kept") == 42
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(server.close)


def test_start_fails_loudly_with_the_log_when_the_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        server = RedisServer(tmp_path, port=port)
        with pytest.raises(RuntimeError, match="Address already in use") as failure:
            server.start()
    assert isinstance(failure.value, ServerError)
    assert str(tmp_path / "redis.log") in str(failure.value)
    assert not server.running


def test_a_server_that_loses_the_race_for_its_port_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    taken = iter([redis_server.port])  # as if another session grabbed the port first
    monkeypatch.setattr(redis_servers, "free_port", lambda: next(taken, None) or free_port())
    with RedisServer(tmp_path) as server:
        assert server.port != redis_server.port
        with (
            redis.Redis.from_url(server.url) as mine,
            redis.Redis.from_url(redis_server.url) as theirs,
        ):
            assert mine.info("server")["process_id"] != theirs.info("server")["process_id"]


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", OWNER_SCRIPT, str(tmp_path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as owner:
        try:
            assert owner.stdout is not None
            port = int(owner.stdout.readline() or 0)
            assert owner.stderr is not None
            assert port, f"the owner did not start Redis: {owner.stderr.read().decode()}"
            with redis.Redis(port=port) as client:
                assert client.ping()
            owner.send_signal(signal.SIGKILL)  # no teardown, no atexit: only the watchdog
        finally:
            owner.kill()
    assert wait_until(lambda: _refused(port), 10), f"Redis on {port} outlived its owner"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_start_fails_loudly_when_a_binary_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="redis-server not found on PATH"):
        RedisServer(tmp_path).start()
    with pytest.raises(RuntimeError, match="redis-cli not found on PATH"):
        RedisCluster(tmp_path).start()

"""Throwaway Redis, Redis Cluster and PostgreSQL servers for tests and benchmarks.

Every server listens on a free port bound to 127.0.0.1 (never the machine's shared 6379 or
5432), keeps its files in a directory the caller gives it, and runs in its own process group, so
stopping it also ends whatever it forked (Redis rewrites, PostgreSQL backends). Starting waits,
within a bound, until the server answers; a server that cannot start raises ServerError, a
RuntimeError whose message ends with the last lines of the server's log. Missing binaries raise
too: these servers fail loudly, they never skip.

Plain classes with no pytest in them, so benchmarks can use them as well:

    with RedisServer(tmp_dir) as server:
        client = redis.asyncio.Redis.from_url(server.url)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from subprocess import CompletedProcess
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT_S = 20.0  # seconds a launched server may take to answer
INITDB_TIMEOUT_S = 60.0  # seconds initdb may take to write a fresh PostgreSQL cluster
CLIENT_TIMEOUT_S = 30.0  # seconds a helper client (redis-cli, createdb) may run
STOP_TIMEOUT_S = 15.0  # seconds a graceful stop may take before the group is SIGKILLed
POLL_INTERVAL_S = 0.02  # seconds between readiness probes
PORT_ATTEMPTS = 3  # launches tried on fresh ports when another process took the chosen one
LOG_TAIL_LINES = 30  # lines of server log quoted in a ServerError
POSTGRES_VERSIONS_DIR = Path("/usr/lib/postgresql")  # Debian: <version>/bin/{initdb,postgres}
_SHARED_PORTS = frozenset({5432, 6379, 16379})  # the machine's own instances: never ours


class ServerError(RuntimeError):
    """A test server is missing, cannot start, or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now; the caller must still win the bind."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _SHARED_PORTS:
            return port
    raise ServerError("found no free TCP port on 127.0.0.1")


def find_postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres, else PATH's."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for bin_dir in POSTGRES_VERSIONS_DIR.glob("*/bin"):
        try:
            version = tuple(int(part) for part in bin_dir.parent.name.split("."))
        except ValueError:
            continue
        if all(_is_executable(bin_dir / name) for name in ("initdb", "postgres")):
            found.append((version, bin_dir))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and _is_executable(Path(initdb).with_name("postgres")):
        return Path(initdb).parent
    raise ServerError(
        f"PostgreSQL server binaries not found: no {POSTGRES_VERSIONS_DIR}/<version>/bin with "
        "initdb and postgres, and no initdb on PATH (Debian/Ubuntu: apt-get install postgresql)"
    )


class RedisServer:
    """One redis-server on 127.0.0.1 that saves nothing unless `options` say so.

    `options` are extra config directives appended after the defaults, so they win:
    {"appendonly": "yes", "appendfsync": "always"} makes a server that survives kill().
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)  # --dir: AOF, RDB and the log live here
        self.port = port  # chosen at the first start when None, then kept for restarts
        self.options = dict(options or {})
        self.bus_port: int | None = None  # cluster bus port, for cluster-enabled servers
        self.log_path = self.directory / "redis.log"
        self.startup_s: float | None = None  # seconds the last start() took
        self._port_chosen = port is not None
        self._process: _ProcessGroup | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited()

    def start(self) -> Self:
        """Launch redis-server and wait until it answers PING with its data loaded."""
        if self.running:
            raise ServerError(f"redis-server on port {self.port} is already running")
        binary = _require_binary("redis-server", "apt-get install redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        # The default cluster bus port, port + 10000, may be taken or even past 65535.
        own_bus_port = (
            self.options.get("cluster-enabled") == "yes" and "cluster-port" not in self.options
        )
        started = time.monotonic()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if not self._port_chosen:
                self.port = free_port()
            if own_bus_port and (self.bus_port is None or not self._port_chosen):
                self.bus_port = free_port()
            try:
                self._launch(binary)
            except ServerError as error:
                self.stop()
                if self._port_chosen or attempt == PORT_ATTEMPTS or not _port_taken(error):
                    raise
            else:
                break
        self._port_chosen = True
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """SIGTERM (Redis saves only what its options ask), then SIGKILL what is left."""
        if self._process is not None:
            self._process.stop(signal.SIGTERM, self._process.pgid)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def restart(self) -> Self:
        """Stop if running, then start again on the same port and directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop for good; the directory stays for post-mortems."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _launch(self, binary: str) -> None:
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip
        for name, value in self.options.items():
            argv += [f"--{name}", value]
        if self.bus_port is not None and "cluster-port" not in self.options:
            argv += ["--cluster-port", str(self.bus_port)]
        self._process = process = _ProcessGroup(argv, self.log_path)
        what = f"redis-server on 127.0.0.1:{self.port}"
        if not _wait_until(lambda: self._answers(process, what), START_TIMEOUT_S):
            raise process.error(f"{what} did not answer PING within {START_TIMEOUT_S:g} s")

    def _answers(self, process: _ProcessGroup, what: str) -> bool:
        if process.exited():
            raise process.error(f"{what} exited with code {process.returncode()} while starting")
        try:
            with _redis_client(self.port) as client:
                info = client.info("server", "persistence")
        except redis.RedisError:
            return False
        # Another test's server may have won the port; ours then exits, and the loop retries.
        return bool(info["process_id"] == process.pgid and info["loading"] == 0)


class RedisCluster:
    """A Redis Cluster of `masters` masters without replicas, all slots assigned."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)  # one node<i>/ directory per master
        self.masters = masters  # redis-cli refuses to create a cluster of fewer than 3
        self.options = dict(options or {})  # extra config directives for every node
        self.nodes: list[RedisServer] = []
        self.startup_s: float | None = None  # seconds the last start() took

    @property
    def url(self) -> str:
        """One node's URL: enough for a cluster client to discover the rest."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> Self:
        """Start the masters, join them with redis-cli, wait until every node says ok."""
        if self.nodes:
            raise ServerError(f"Redis Cluster in {self.directory} is already running")
        cli = _require_binary("redis-cli", "apt-get install redis-tools")
        started = time.monotonic()
        try:
            for index in range(self.masters):
                node_dir = self.directory / f"node{index}"
                options = {
                    "cluster-enabled": "yes",
                    "cluster-config-file": str(node_dir / "nodes.conf"),
                    "cluster-node-timeout": "5000",
                    **self.options,
                }
                self.nodes.append(RedisServer(node_dir, options=options).start())
            self._create(cli)
            if not _wait_until(self._all_ok, START_TIMEOUT_S):
                raise ServerError(
                    f"Redis Cluster on ports {self._ports()} did not reach cluster_state:ok "
                    f"within {START_TIMEOUT_S:g} s; CLUSTER INFO per node: {self._states()}"
                )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _ports(self) -> list[int | None]:
        return [node.port for node in self.nodes]

    def _create(self, cli: str) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        _run_checked(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        )

    def _cluster_state(self, node: RedisServer) -> str:
        try:
            with _redis_client(node.port) as client:
                info = client.execute_command("CLUSTER INFO")
        except redis.RedisError as error:
            return f"unreachable ({error})"
        if isinstance(info, bytes):
            info = info.decode()
        if isinstance(info, str):
            info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return str(info.get("cluster_state", "unknown"))

    def _all_ok(self) -> bool:
        for node in self.nodes:
            if not node.running:
                raise ServerError(f"Redis Cluster node on port {node.port} died while joining")
        return all(self._cluster_state(node) == "ok" for node in self.nodes)

    def _states(self) -> dict[int | None, str]:
        return {node.port: self._cluster_state(node) for node in self.nodes}


class PostgresServer:
    """A fresh PostgreSQL cluster with trust auth and a database, on 127.0.0.1 only.

    Runs with fsync=off: tests and benchmarks need speed, not survival of an OS crash. A crash
    of PostgreSQL itself (kill()) still loses nothing committed, since the OS keeps the writes.
    PostgreSQL refuses to run as root, so as root initdb and postgres run as the postgres user
    through runuser, in a data directory that user owns.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        database: str = "counters",
        bin_dir: Path | None = None,
    ) -> None:
        self.directory = Path(directory)  # logs; also the data when the postgres user can reach it
        self.port = port  # chosen at the first start when None, then kept for restarts
        self.database = database  # created, owned by postgres, after initdb
        self.bin_dir = bin_dir  # found by find_postgres_bin_dir() when None
        self.data_dir: Path | None = None  # PGDATA, set by the first start
        self.log_path = self.directory / "postgres.log"
        self.startup_s: float | None = None  # seconds the last start() took
        self._port_chosen = port is not None
        self._private_root: Path | None = None  # made outside `directory`; close() removes it
        self._dead_segment: int | None = None  # shared memory id a killed postmaster left
        self._process: _ProcessGroup | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited()

    def start(self) -> Self:
        """initdb on the first start, launch postgres, wait for connections, create the database."""
        if self.running:
            raise ServerError(f"postgres on port {self.port} is already running")
        self.bin_dir = self.bin_dir or find_postgres_bin_dir()
        self._binary("postgres")  # fail before initdb, not after
        as_postgres = _as_postgres_user()
        self.directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        fresh = self.data_dir is None
        try:
            if self.data_dir is None:
                self.data_dir = self._initdb(as_postgres)
            for attempt in range(1, PORT_ATTEMPTS + 1):
                if not self._port_chosen:
                    self.port = free_port()
                try:
                    self._launch(as_postgres, self.data_dir)
                except ServerError as error:
                    self.stop()
                    if self._port_chosen or attempt == PORT_ATTEMPTS or not _port_taken(error):
                        raise
                else:
                    break
            self._port_chosen = True
            self._dead_segment = None  # postgres reclaims its key's unattached segment
            if fresh:
                self._run_client("createdb", self.database)
        except BaseException:
            if fresh:
                self.close()  # half-made data is worth nothing; the logs stay in `directory`
            else:
                self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then SIGKILL what is left of the group."""
        if self._process is not None:
            postmaster = self._postmaster_pid()
            if self._process.stop(signal.SIGINT, postmaster):
                self._forget_lock_of(postmaster)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would."""
        if self._process is not None:
            postmaster = self._postmaster_pid()
            if self._process.kill():
                self._forget_lock_of(postmaster)
            self._process = None

    def restart(self) -> Self:
        """Stop if running, then start on the same port and data (recovering, if killed)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop for good and delete data made outside `directory`; logs stay."""
        self.stop()
        ipcrm = shutil.which("ipcrm")
        if self._dead_segment is not None and ipcrm is not None:
            _run([ipcrm, "-m", str(self._dead_segment)])
            self._dead_segment = None
        if self._private_root is not None:
            shutil.rmtree(self._private_root, ignore_errors=True)
            self._private_root = None
            self.data_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _binary(self, name: str) -> str:
        """A binary from bin_dir; clients (pg_isready, createdb) may come from PATH instead."""
        assert self.bin_dir is not None
        if _is_executable(self.bin_dir / name):
            return str(self.bin_dir / name)
        if name in ("initdb", "postgres"):
            raise ServerError(f"{name} not found in {self.bin_dir}, the PostgreSQL bin directory")
        return _require_binary(name, "apt-get install postgresql-client")

    def _root(self, as_postgres: list[str]) -> Path:
        """A directory for the data and sockets that the server's user owns."""
        if not as_postgres:
            root = self.directory / "pg"
            root.mkdir(exist_ok=True)
            return root
        # As root: pytest's base temp dir is 0700 root, out of the postgres user's reach.
        reachable = _run([*as_postgres, "test", "-x", str(self.directory)])
        if reachable.returncode == 0:
            root = self.directory / "pg"
            root.mkdir(exist_ok=True)
        else:
            root = self._private_root = Path(tempfile.mkdtemp(prefix="counters-pg-"))
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
        return root

    def _initdb(self, as_postgres: list[str]) -> Path:
        root = self._root(as_postgres)
        data_dir = root / "data"
        argv = [
            *as_postgres,
            self._binary("initdb"),
            "--pgdata", str(data_dir),
            "--username", "postgres",
            "--encoding", "UTF8",
            "--locale", "C",
            "--auth", "trust",
            "--no-sync",
        ]  # fmt: skip
        process = _ProcessGroup(argv, self.directory / "initdb.log", cwd=root, env=_clean_env())
        if not _wait_until(process.exited, INITDB_TIMEOUT_S):
            process.kill()
            raise process.error(f"initdb ran longer than {INITDB_TIMEOUT_S:g} s")
        process.kill()  # reaps initdb and anything it left behind
        if process.returncode() != 0:
            raise process.error(f"initdb failed with code {process.returncode()}")
        return data_dir

    def _launch(self, as_postgres: list[str], data_dir: Path) -> None:
        socket_dir = self._socket_dir()
        if not socket_dir.exists():
            socket_dir.mkdir()
            shutil.copystat(data_dir.parent, socket_dir)
            owner = data_dir.parent.stat()
            os.chown(socket_dir, owner.st_uid, owner.st_gid)
        argv = [
            *as_postgres,
            self._binary("postgres"),
            "-D", str(data_dir),
            "-p", str(self.port),
            "-k", str(socket_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
        ]  # fmt: skip
        self._process = process = _ProcessGroup(
            argv, self.log_path, cwd=data_dir.parent, env=_clean_env()
        )
        what = f"postgres on 127.0.0.1:{self.port}"
        if not _wait_until(lambda: self._accepts(process, what), START_TIMEOUT_S):
            raise process.error(f"{what} did not accept connections within {START_TIMEOUT_S:g} s")

    def _accepts(self, process: _ProcessGroup, what: str) -> bool:
        if process.exited():
            raise process.error(f"{what} exited with code {process.returncode()} while starting")
        if self._postmaster_status() != "ready":
            return False  # not ours yet, whoever answers on the port: the loop retries
        pg_isready = self._binary("pg_isready")
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        probe = _run([pg_isready, "-q", *address, "-t", "1"], env=_clean_env())
        return probe.returncode == 0

    def _run_client(self, name: str, *args: str) -> None:
        argv = [self._binary(name), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        _run_checked([*argv, *args], env=_clean_env())

    def _forget_lock_of(self, postmaster: int | None) -> None:
        """Remove the lock files of a postmaster known dead. Until init reaps its zombie, which
        can take seconds, a new postmaster would take them for a live one's and refuse to start."""
        if postmaster is None or self.data_dir is None:
            return
        locks = [self.data_dir / "postmaster.pid"]
        locks += self._socket_dir().glob(".s.PGSQL.*.lock")
        for lock in locks:
            with contextlib.suppress(OSError, ValueError, IndexError):
                lines = lock.read_text().split("\n")
                if int(lines[0]) != postmaster:
                    continue
                lock.unlink()
                if lock.name == "postmaster.pid":
                    # Line 7 is "<key> <shmid>" of the System V segment; the next start reuses
                    # that segment, close() removes it if no start comes.
                    self._dead_segment = int(lines[6].split()[1])

    def _socket_dir(self) -> Path:
        """Where postgres puts its Unix socket: never /var/run/postgresql, the shared one's."""
        assert self.data_dir is not None
        return self.data_dir.parent / "sockets"

    def _postmaster_pid(self) -> int | None:
        """The postmaster's pid, which differs from our child's when runuser sits between."""
        lock = self._own_lock()
        return int(lock[0]) if lock else None

    def _postmaster_status(self) -> str | None:
        """Our postmaster's status line: starting, ready (accepting connections) or stopping."""
        lock = self._own_lock()
        return lock[7].strip() if lock and len(lock) > 7 else None

    def _own_lock(self) -> list[str] | None:
        """The lines of postmaster.pid when they name a postmaster of our process group."""
        if self._process is None or self.data_dir is None:
            return None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
            same_group = os.getpgid(int(lines[0])) == self._process.pgid  # not a stale file
        except (OSError, ValueError):
            return None
        return lines if same_group else None


class _ProcessGroup:
    """A child leading its own process group, its stdout and stderr appended to a log file.

    A watchdog shell SIGKILLs the group if this process dies without stopping it (a `timeout`
    wrapper's SIGTERM, a CI cancel, kill -9): its stdin is a pipe only we hold, so it reads
    end-of-file instead of "stop". Servers never outlive the session that started them.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        self.pgid = self._popen.pid
        try:
            self._watchdog = subprocess.Popen(
                ["sh", "-c", f'read -r word; [ "$word" = stop ] || kill -s KILL -- -{self.pgid}'],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # out of the group it guards, and of the terminal's ^C
            )
        except BaseException:
            os.killpg(self.pgid, signal.SIGKILL)
            self._popen.wait(STOP_TIMEOUT_S)
            raise

    def exited(self) -> bool:
        """Whether the leader has exited; it stays unreaped, which keeps the group id ours."""
        if self._popen.returncode is not None:
            return True
        try:
            status = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return status is not None

    def returncode(self) -> int | None:
        """The leader's exit code (negative: killed by that signal), None while it runs."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        try:
            status = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if status is None:
            return None
        return status.si_status if status.si_code == os.CLD_EXITED else -status.si_status

    def stop(self, signum: int, pid: int | None = None) -> bool:
        """Send `signum` to `pid` (default: the whole group), wait, then kill() the rest."""
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                if pid is None:
                    os.killpg(self.pgid, signum)
                else:
                    os.kill(pid, signum)
            _wait_until(self.exited, STOP_TIMEOUT_S)
        return self.kill()

    def kill(self) -> bool:
        """SIGKILL every process in the group; whether none is left running."""
        if self._popen.returncode is not None:
            return True  # killed and reaped before; the group id may belong to strangers now
        # Signal before reaping the leader: while it is unreaped its pid cannot name a new group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self._popen.wait(STOP_TIMEOUT_S)
        # Members orphaned by the leader's death are reaped by init; wait until they are gone,
        # since a restarted server needs their ports and shared memory.
        gone = _wait_until(lambda: not _group_alive(self.pgid), STOP_TIMEOUT_S)
        self._dismiss_watchdog()
        return gone

    def _dismiss_watchdog(self) -> None:
        if self._watchdog.returncode is None:
            self._watchdog.communicate(b"stop\n", timeout=STOP_TIMEOUT_S)

    def error(self, message: str) -> ServerError:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                output = log.read().decode(errors="replace")
        except OSError as error:
            output = f"(cannot read the log: {error})"
        return ServerError(f"{message}; last lines of {self.log_path}:\n{_tail(output)}")


def _wait_until(ready: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `ready` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: they hold no ports or
    memory, and init reaps orphans on its own schedule (on some machines every second or two)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stats = list(Path("/proc").glob("[0-9]*/stat"))
    except OSError:
        return True
    for stat in stats:
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> CompletedProcess[str]:
    """Run a short client command within CLIENT_TIMEOUT_S; its result, whatever the exit code."""
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=CLIENT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ServerError(f"{shlex.join(argv)} ran longer than {CLIENT_TIMEOUT_S:g} s") from error


def _run_checked(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    result = _run(argv, env=env)
    if result.returncode != 0:
        raise ServerError(
            f"{shlex.join(argv)} failed with code {result.returncode}:\n"
            f"{_tail(result.stdout + result.stderr)}"
        )


def _redis_client(port: int | None) -> redis.Redis:
    """A client for one probe: the caller's loop does the retrying, within its own bound."""
    return redis.Redis(
        host="127.0.0.1",
        port=port or 0,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


def _port_taken(error: ServerError) -> bool:
    return "Address already in use" in str(error)


def _require_binary(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerError(f"{name} not found on PATH; integration tests need it ({install_hint})")
    return path


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a PostgreSQL server binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    runuser = _require_binary("runuser", "apt-get install util-linux")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "running as root, which PostgreSQL refuses, and there is no postgres user to run it as"
        ) from None
    return [runuser, "-u", "postgres", "--"]


def _clean_env() -> dict[str, str]:
    """This environment without PG* variables, which could point clients at other servers."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines) if lines else "    (empty)"

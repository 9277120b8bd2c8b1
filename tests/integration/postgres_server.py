"""A throwaway PostgreSQL server for tests and benchmarks, and where its binaries are found.

It listens on a free 127.0.0.1 port, keeps its logs in the directory it is given, fails loudly
with a ServerError when it cannot start, and never outlives the process that started it (see
servers.py). A plain class with no pytest in it, so benchmarks can use it as well:

    with PostgresServer(tmp_dir) as server:
        connection = await asyncpg.connect(server.dsn)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Self

from tests.integration.servers import (
    START_TIMEOUT_S,
    ManagedServer,
    ProcessGroup,
    ServerError,
    launch_on_a_free_port,
    require_binary,
    run_command,
    run_command_checked,
    wait_until,
)
from tests.support.net import free_port

INITDB_TIMEOUT_S = 60.0  # seconds initdb may take to write a fresh PostgreSQL cluster
POSTGRES_VERSIONS_DIR = Path("/usr/lib/postgresql")  # Debian: <version>/bin/{initdb,postgres}


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


class PostgresServer(ManagedServer):
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
        listen: str = "127.0.0.1",
    ) -> None:
        self.listen = listen  # listen_addresses: 127.0.0.1 plus any more, comma-separated
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
        self._process: ProcessGroup | None = None

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
            data_dir = self.data_dir

            def pick_port() -> None:
                self.port = free_port()

            launch_on_a_free_port(
                self._port_chosen,
                pick_port,
                lambda: self._launch(as_postgres, data_dir),
                self.stop,
            )
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

    def create_database(self, name: str) -> str:
        """Create database `name` (owned by postgres) in the running server; its DSN."""
        self._run_client("createdb", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

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
            run_command([ipcrm, "-m", str(self._dead_segment)])
            self._dead_segment = None
        if self._private_root is not None:
            shutil.rmtree(self._private_root, ignore_errors=True)
            self._private_root = None
            self.data_dir = None

    def _binary(self, name: str) -> str:
        """A binary from bin_dir; clients (pg_isready, createdb) may come from PATH instead."""
        assert self.bin_dir is not None
        if _is_executable(self.bin_dir / name):
            return str(self.bin_dir / name)
        if name in ("initdb", "postgres"):
            raise ServerError(f"{name} not found in {self.bin_dir}, the PostgreSQL bin directory")
        return require_binary(name, "apt-get install postgresql-client")

    def _root(self, as_postgres: list[str]) -> Path:
        """A directory for the data and sockets that the server's user owns."""
        if not as_postgres:
            root = self.directory / "pg"
            root.mkdir(exist_ok=True)
            return root
        # As root: pytest's base temp dir is 0700 root, out of the postgres user's reach.
        reachable = run_command([*as_postgres, "test", "-x", str(self.directory)])
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
        process = ProcessGroup(argv, self.directory / "initdb.log", cwd=root, env=_clean_env())
        if not wait_until(process.exited, INITDB_TIMEOUT_S):
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
            "-c", f"listen_addresses={self.listen}",
            "-c", "fsync=off",
        ]  # fmt: skip
        self._process = process = ProcessGroup(
            argv, self.log_path, cwd=data_dir.parent, env=_clean_env()
        )
        what = f"postgres on 127.0.0.1:{self.port}"
        if not wait_until(lambda: self._accepts(process, what), START_TIMEOUT_S):
            raise process.error(f"{what} did not accept connections within {START_TIMEOUT_S:g} s")

    def _accepts(self, process: ProcessGroup, what: str) -> bool:
        if process.exited():
            raise process.error(f"{what} exited with code {process.returncode()} while starting")
        if self._postmaster_status() != "ready":
            return False  # not ours yet, whoever answers on the port: the loop retries
        pg_isready = self._binary("pg_isready")
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        probe = run_command([pg_isready, "-q", *address, "-t", "1"], env=_clean_env())
        return probe.returncode == 0

    def _run_client(self, name: str, *args: str) -> None:
        argv = [self._binary(name), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        run_command_checked([*argv, *args], env=_clean_env())

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


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a PostgreSQL server binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    runuser = require_binary("runuser", "apt-get install util-linux")
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

"""What the throwaway test servers share: ServerError, process groups, bounded waits.

The servers themselves live next door: RedisServer and RedisCluster in redis_servers.py,
PostgresServer in postgres_server.py. Every server listens on a free port bound to 127.0.0.1
(never the machine's shared 6379 or 5432), keeps its files in a directory the caller gives it,
and runs in its own process group (a ProcessGroup), so stopping it also ends whatever it forked
(Redis rewrites, PostgreSQL backends). Starting waits, within a bound, until the server answers;
a server that cannot start raises ServerError, a RuntimeError whose message ends with the last
lines of the server's log. Missing binaries raise too: these servers fail loudly, they never skip.

Plain code with no pytest in it, so benchmarks can use it as well.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from subprocess import CompletedProcess
from types import TracebackType
from typing import Self

START_TIMEOUT_S = 20.0  # seconds a launched server may take to answer
CLIENT_TIMEOUT_S = 30.0  # seconds a helper client (redis-cli, createdb) may run
STOP_TIMEOUT_S = 15.0  # seconds a graceful stop may take before the group is SIGKILLed
POLL_INTERVAL_S = 0.02  # seconds between readiness probes
PORT_ATTEMPTS = 3  # launches tried on fresh ports when another process took the chosen one
LOG_TAIL_LINES = 30  # lines of server log quoted in a ServerError


class ServerError(RuntimeError):
    """A test server is missing, cannot start, or did not answer in time."""


class ProcessGroup:
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
            wait_until(self.exited, STOP_TIMEOUT_S)
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
        gone = wait_until(lambda: not _group_alive(self.pgid), STOP_TIMEOUT_S)
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


def wait_until(ready: Callable[[], bool], timeout_s: float) -> bool:
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


def run_command(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None
) -> CompletedProcess[str]:
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


def run_command_checked(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    result = run_command(argv, env=env)
    if result.returncode != 0:
        raise ServerError(
            f"{shlex.join(argv)} failed with code {result.returncode}:\n"
            f"{_tail(result.stdout + result.stderr)}"
        )


class ManagedServer:
    """`with Server(...) as server:` starts it and closes it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def launch_on_a_free_port(
    port_chosen: bool,
    pick_ports: Callable[[], None],
    launch: Callable[[], None],
    stop: Callable[[], None],
) -> None:
    """launch(); when the port was picked here and another process took it meanwhile, pick
    again and retry, up to PORT_ATTEMPTS launches. A chosen port is never changed."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        if not port_chosen:
            pick_ports()
        try:
            launch()
        except ServerError as error:
            stop()
            if port_chosen or attempt == PORT_ATTEMPTS or not port_taken(error):
                raise
        else:
            return


def port_taken(error: ServerError) -> bool:
    return "Address already in use" in str(error)


def require_binary(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerError(f"{name} not found on PATH; integration tests need it ({install_hint})")
    return path


def _tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines) if lines else "    (empty)"

"""A private network for one fault run: a bridge in the root namespace and one network
namespace per node, each joined to the bridge by a veth pair.

    with Network(nodes=3) as net:
        net.address(1)            # "10.77.<run>.2", node 1's address inside its namespace
        net.gateway               # "10.77.<run>.1", the bridge: clients, Redis, PostgreSQL
        net.exec_prefix(1)        # ["ip", "netns", "exec", "fz<run>n1"]

Names carry the run's number (the third octet of its subnet), claimed atomically by creating
the bridge, so parallel runs never clash. The bridge's alias records the pid that owns it:
a later run removes what a dead owner left behind (a crashed or SIGKILLed run), by name
prefix, and never touches a live run's. Teardown runs even when the body fails and every
command it runs is bounded in time. Traffic stays on 10.77.<run>.0/24: no route out, no NAT.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from types import TracebackType
from typing import Self

PREFIX = "fz"  # every bridge, namespace and veth of the suite starts with this
SUBNET = "10.77"  # runs use 10.77.<run>.0/24, run in 1..254
COMMAND_TIMEOUT_S = 20.0  # seconds one `ip` or `nft` command may take


class NetworkError(RuntimeError):
    """A namespace, link or address could not be made (not root? no `ip`?)."""


def run(argv: list[str], check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command within a bound; its stdout, or NetworkError with its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{' '.join(argv)} ran longer than {timeout:g}s") from None
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def bridge_name(run_id: int) -> str:
    return f"{PREFIX}{run_id}b"


def namespace_name(run_id: int, index: int) -> str:
    return f"{PREFIX}{run_id}n{index}"


def _veth_names(run_id: int, index: int) -> tuple[str, str]:
    """(root side, namespace side); at most 15 characters each (IFNAMSIZ)."""
    return f"{PREFIX}{run_id}h{index}", f"{PREFIX}{run_id}c{index}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_of(bridge: str) -> int | None:
    """The pid in the bridge's alias ("pid=1234"), or None when it has none."""
    out = run(["ip", "-o", "link", "show", "dev", bridge], check=False)
    marker = "alias pid="
    if marker not in out:
        return None
    try:
        return int(out.split(marker, 1)[1].split()[0])
    except ValueError:
        return None


def _remove_run(run_id: int) -> None:
    """Delete every namespace and link of run `run_id`; what is already gone is fine."""
    prefix = f"{PREFIX}{run_id}n"
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            _kill_namespace_processes(name)
            run(["ip", "netns", "delete", name], check=False)
    for line in run(["ip", "-o", "link", "show"], check=False).splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        if name.startswith(f"{PREFIX}{run_id}h"):
            run(["ip", "link", "delete", name], check=False)
    run(["ip", "link", "delete", bridge_name(run_id)], check=False)


def _kill_namespace_processes(namespace: str) -> None:
    """SIGKILL what still runs in a namespace (a node of a crashed run), so it can go."""
    for pid in run(["ip", "netns", "pids", namespace], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def clean_leftovers() -> list[int]:
    """Remove the runs whose owner process is dead; the run numbers removed."""
    removed = []
    for line in run(["ip", "-o", "link", "show", "type", "bridge"], check=False).splitlines():
        name = line.split(":")[1].strip() if ":" in line else ""
        if not (name.startswith(PREFIX) and name.endswith("b") and name[2:-1].isdigit()):
            continue
        owner = _owner_of(name)
        if owner is not None and _pid_alive(owner):
            continue  # a live run's, maybe in another pytest
        run_id = int(name[2:-1])
        _remove_run(run_id)
        removed.append(run_id)
    # Namespaces whose bridge is already gone (a run killed halfway through teardown).
    bridges = run(["ip", "-o", "link", "show", "type", "bridge"], check=False)
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX) and "n" in name[2:]:
            run_id_text = name[2:].split("n", 1)[0]
            if run_id_text.isdigit() and f"{bridge_name(int(run_id_text))}:" not in bridges:
                _kill_namespace_processes(name)
                run(["ip", "netns", "delete", name], check=False)
    return removed


class Network:
    """A bridge 10.77.<run>.1/24 and `nodes` namespaces at 10.77.<run>.<index + 1>."""

    def __init__(self, nodes: int) -> None:
        if not 1 <= nodes <= 200:
            raise ValueError(f"nodes must be 1..200, not {nodes}")
        if os.geteuid() != 0:
            raise NetworkError("network namespaces need root (run the fault suite as root)")
        self.nodes = nodes
        self.run_id = 0  # claimed in __enter__

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.run_id}.1"

    @property
    def cidr(self) -> str:
        return f"{SUBNET}.{self.run_id}.0/24"

    def address(self, index: int) -> str:
        """Node `index`'s (0-based) address in its namespace."""
        return f"{SUBNET}.{self.run_id}.{index + 2}"

    def namespace(self, index: int) -> str:
        return namespace_name(self.run_id, index)

    def exec_prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(index)]

    def __enter__(self) -> Self:
        clean_leftovers()
        self.run_id = self._claim_run()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.run_id:
            _remove_run(self.run_id)

    def _claim_run(self) -> int:
        """The first run number whose bridge we could create: creation is the lock."""
        taken = run(["ip", "-o", "link", "show", "type", "bridge"], check=False)
        for run_id in range(1, 255):
            name = bridge_name(run_id)
            if f" {name}:" in taken:
                continue
            done = subprocess.run(
                ["ip", "link", "add", name, "type", "bridge"],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            if done.returncode == 0:
                run(["ip", "link", "set", "dev", name, "alias", f"pid={os.getpid()}"])
                return run_id
            if "File exists" not in done.stderr:
                raise NetworkError(f"cannot create bridge {name}: {done.stderr.strip()}")
        raise NetworkError("no free run number: 254 fault networks exist")

    def _build(self) -> None:
        bridge = bridge_name(self.run_id)
        run(["ip", "addr", "add", f"{self.gateway}/24", "dev", bridge])
        run(["ip", "link", "set", "dev", bridge, "up"])
        for index in range(self.nodes):
            namespace = self.namespace(index)
            outside, inside = _veth_names(self.run_id, index)
            run(["ip", "netns", "add", namespace])
            run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
            run(["ip", "link", "set", "dev", inside, "netns", namespace])
            run(["ip", "link", "set", "dev", outside, "master", bridge])
            run(["ip", "link", "set", "dev", outside, "up"])
            inner = self.exec_prefix(index)
            run([*inner, "ip", "addr", "add", f"{self.address(index)}/24", "dev", inside])
            run([*inner, "ip", "link", "set", "dev", inside, "up"])
            run([*inner, "ip", "link", "set", "dev", "lo", "up"])

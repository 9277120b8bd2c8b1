"""The fault network itself: namespaces torn down whatever happens, drops that are silent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults import drops
from tests.faults.netns import Network, bridge_name, clean_leftovers, run

PORT = 7999

LISTEN = f"""
import socket, sys
server = socket.create_server((sys.argv[1], {PORT}))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""

CONNECT = f"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], {PORT}), timeout=1.5).close()
    print("connected")
except TimeoutError:
    print("timed out")
except OSError as error:
    print("refused" if isinstance(error, ConnectionRefusedError) else repr(error))
"""


def _leftovers(run_id: int) -> list[str]:
    names = run(["ip", "netns", "list"]).split()
    links = run(["ip", "-o", "link", "show"])
    found = [n for n in names if n.startswith(f"fz{run_id}n")]
    return found + ([bridge_name(run_id)] if f" {bridge_name(run_id)}:" in links else [])


def _connect(net: Network, source: int | None, target: int) -> str:
    prefix = [] if source is None else net.exec_prefix(source)
    argv = [*prefix, sys.executable, "-c", CONNECT, net.address(target)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()


def test_a_network_is_torn_down_even_when_its_body_fails() -> None:
    with pytest.raises(RuntimeError, match="the body failed"), Network(2) as net:
        run_id = net.run_id
        assert len(_leftovers(run_id)) == 3  # two namespaces and the bridge
        raise RuntimeError("the body failed")
    assert _leftovers(run_id) == []


def test_what_a_dead_run_left_behind_is_removed_and_a_live_one_is_kept() -> None:
    probe = subprocess.Popen(["true"])
    probe.wait()
    with Network(1) as live, Network(1) as crashed:
        bridge = bridge_name(crashed.run_id)
        run(["ip", "link", "set", "dev", bridge, "alias", f"pid={probe.pid}"])
        removed = clean_leftovers()
        assert crashed.run_id in removed
        assert _leftovers(crashed.run_id) == []
        assert len(_leftovers(live.run_id)) == 2
    assert _leftovers(live.run_id) == []


def test_a_drop_is_silent_one_way_and_heals() -> None:
    with Network(2) as net:
        network_drops = drops.Drops(net)
        listener = subprocess.Popen(
            [*net.exec_prefix(1), sys.executable, "-c", LISTEN, net.address(1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None
            assert listener.stdout.readline().strip() == "listening"
            assert _connect(net, 0, 1) == "connected"
            network_drops.block(drops.one_way([0], [1]))  # node 1 drops node 0's packets
            assert _connect(net, 0, 1) == "timed out"  # nothing refused: the link hangs
            assert _connect(net, None, 1) == "connected"  # clients on the bridge still reach it
            network_drops.heal()
            assert _connect(net, 0, 1) == "connected"
        finally:
            listener.kill()
            listener.wait(timeout=10)
            if listener.stdout is not None:
                listener.stdout.close()

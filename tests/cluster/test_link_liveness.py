"""Peer links with liveness, end to end with real node processes: a replica paused with SIGSTOP
(its kernel still accepts and acknowledges, nothing answers) is noticed by the other nodes'
links within a heartbeat and a half, long before the failure detector (set to a minute here)
would mark it down, and long before the request timeout.

- a write in flight to it fails at once (503, "too few replicas answered"), not at the
  request timeout (504);
- once the links are dead, `all` is refused before anything applies (503, nothing applied)
  while quorum writes at the two remaining replicas all succeed;
- after SIGCONT the links are redialled and `all` succeeds again, at every node;
- every node ends with exactly the writes that applied, and nobody logged an error (the
  harness checks the logs: no stray "Future exception was never retrieved", no unhandled
  error on the peer endpoint).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from node.base.config import Config
from node.cluster import peer_auth
from node.cluster.links import PEER_PATH
from tests.cluster.harness import Cluster, Node
from tests.support import eventually

NS = "liveness"
SECRET = Config(node_id="x").cluster_secret  # the default every node of the harness shares
SETTINGS = {
    "COUNTERS_FAILURE_TIMEOUT_S": "60",  # the detector stays out of it: only links notice
    "COUNTERS_REQUEST_TIMEOUT_S": "6",
    "COUNTERS_PEER_HEARTBEAT_S": "1",  # a silent peer's link dies within 1.5 s
}


class Tally:
    """The exact total every node must end with: the writes that applied."""

    def __init__(self) -> None:
        self.total = 0

    async def write(
        self, cluster: Cluster, node: Node, delta: int, consistency: str
    ) -> tuple[int, dict[str, Any]]:
        status, body = await cluster.increment(node, NS, "c", delta, consistency=consistency)
        if status == 200 or (status >= 500 and body.get("may_have_applied") is True):
            self.total += delta  # the coordinator applied it before asking the replicas
        else:
            assert status == 503 and body.get("may_have_applied") is False, (status, body)
        return status, body


async def test_a_paused_replica_is_cut_off_by_link_heartbeats_and_back_after_it_resumes(
    cluster: Cluster,
):
    cluster.settings.update(SETTINGS)
    n1, n2, n3 = await cluster.start(3)
    tally = Tally()
    status, body = await tally.write(cluster, n1, 1, "all")
    assert status == 200, body

    n3.pause()
    try:
        paused = time.monotonic()
        # In flight when the link dies: failed at once, so the client hears within a
        # heartbeat and a half that it may have applied, not after the 6 s timeout (504).
        status, body = await tally.write(cluster, n1, 10, "all")
        assert status == 503, body
        assert body["may_have_applied"] is True, body
        assert "too few replicas answered" in body["detail"], body

        async def refused_up_front(node: Node) -> bool:
            status, body = await tally.write(cluster, node, 100, "all")
            return status == 503 and body["may_have_applied"] is False

        for node in (n1, n2):
            await eventually(lambda n=node: refused_up_front(n), f"{node.node_id} refuses all", 10)
        cut_off_s = time.monotonic() - paused

        for i in range(20):  # quorum writes at the two replicas left: every one succeeds
            status, body = await tally.write(cluster, (n1, n2)[i % 2], 1000, "quorum")
            assert status == 200, body
    finally:
        n3.resume()
    resumed = time.monotonic()

    async def all_writes(node: Node) -> bool:
        status, _ = await tally.write(cluster, node, 10_000, "all")
        return status == 200

    for node in (n1, n2):
        await eventually(lambda n=node: all_writes(n), f"{node.node_id} to reach n3 again", 10)
    back_s = time.monotonic() - resumed
    print(f"links cut off {cut_off_s:.2f}s after SIGSTOP, back {back_s:.2f}s after SIGCONT")

    await cluster.converged(NS, {"c": tally.total}, [n1, n2, n3])


PING = b"\x89\x80" + b"\x00" * 4  # a client's empty PING frame (masked, with a zero mask)


async def test_a_link_that_vanishes_while_its_peer_is_paused_logs_no_unhandled_error(
    cluster: Cluster,
):
    """What a peer's heartbeat leaves behind when it gives up on a paused node: pings queued
    in the paused node's socket, then a reset. On resuming, the node answers the first ping
    into a connection that is already gone, and must not report the second as an unhandled
    error of GET /peer/ws (the harness fails the test on such a log line)."""
    (n1,) = await cluster.start(1)
    for linger in (True, False):  # a reset, and a plain close
        session = cluster.session
        assert session is not None
        headers = peer_auth.sign(SECRET, "GET", PEER_PATH, "n9", n1.address)
        ws = await session.ws_connect(f"http://{n1.address}{PEER_PATH}", headers=headers)
        transport = ws._response.connection.transport  # type: ignore[union-attr]
        assert transport is not None
        n1.pause()
        try:
            transport.write(PING * 3)
            if linger:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            await asyncio.sleep(0.2)  # the packets reach the paused node's kernel
        finally:
            n1.resume()
        await ws.close()
        status, _ = await cluster.get(n1, "/readyz")
        assert status == 200

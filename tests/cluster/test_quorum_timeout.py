"""A quorum write whose other replicas stop answering (SIGSTOP), end to end: the client gets a
504 quorum-timeout problem that says the increment may still apply, within the request timeout,
and once the replicas resume every node holds the increment exactly once."""

from __future__ import annotations

import time

from tests.cluster.harness import Cluster

NS = "timeout"
REQUEST_TIMEOUT_S = 2.0
MARGIN_S = 2.5  # a loaded 2-core machine answers late, never early


async def test_a_quorum_write_to_paused_replicas_answers_504_and_applies_once_after_they_resume(
    cluster: Cluster,
):
    # Paused replicas stay "alive" for the failure timeout, and their links for 1.5 peer
    # heartbeats; long enough here that the write is sent to them rather than refused up
    # front as unavailable, and times out before their links die (either is a 503;
    # test_link_liveness.py shows the default heartbeat cutting them off).
    cluster.settings.update(
        COUNTERS_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        COUNTERS_FAILURE_TIMEOUT_S="8",
        COUNTERS_PEER_HEARTBEAT_S="4",
    )
    n1, n2, n3 = await cluster.start(3)
    status, body = await cluster.increment(n1, NS, "c", 5, consistency="all")
    assert status == 200, body
    n2.pause()
    n3.pause()
    try:
        started = time.monotonic()
        status, body = await cluster.increment(n1, NS, "c", 3)
        elapsed = time.monotonic() - started
        assert status == 504, body
        assert body["type"] == "/problems/quorum-timeout", body
        assert body["may_have_applied"] is True, body
        assert "may still apply" in body["detail"], body
        assert REQUEST_TIMEOUT_S <= elapsed < REQUEST_TIMEOUT_S + MARGIN_S, elapsed
        assert await cluster.value(n1, NS, "c") == 8  # applied on the coordinator already
    finally:
        n2.resume()
        n3.resume()
    await cluster.converged(NS, {"c": 8}, [n1, n2, n3])
    assert await cluster.value(n2, NS, "c", "all") == 8

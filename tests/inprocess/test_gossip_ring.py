"""Gossip parses a peer's ring only when it differs from one already parsed: every message
carries the whole ring (256 shards by default, 0.7 ms to parse and check), and a settled
cluster's messages all carry the same one. Counted, not timed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.cluster import gossip
from node.cluster.wire import ProtocolError
from tests.inprocess.cluster import InProcessCluster


async def test_a_settled_cluster_parses_no_ring_in_its_gossip(
    inproc: InProcessCluster, monkeypatch: pytest.MonkeyPatch
):
    await inproc.start(3)
    parsed = [0]
    real = gossip.RingState.from_wire

    def counted(obj: Any) -> Any:
        parsed[0] += 1
        return real(obj)

    monkeypatch.setattr(gossip.RingState, "from_wire", counted)
    exchanges = sum(node.parts.gossip.rounds for node in inproc.live())
    await asyncio.sleep(0.5)  # ten gossip rounds at this cluster's pace
    assert sum(node.parts.gossip.rounds for node in inproc.live()) > exchanges + 6
    assert parsed[0] == 0


async def test_gossip_says_what_a_node_does_and_a_bad_list_changes_nothing(
    inproc: InProcessCluster,
):
    await inproc.start(2)
    n1, n2 = inproc.nodes["n1"], inproc.nodes["n2"]
    await inproc.pause_gossip()
    assert n1.cluster.supports("n2", "claimed-batch")
    message = n2.parts.gossip.message("n1")

    bad = {**message, "features": "claimed-batch"}  # not a list
    with pytest.raises(ProtocolError):
        n1.parts.gossip.absorb(bad)
    assert n1.cluster.supports("n2", "claimed-batch")  # unchanged

    earlier = {k: v for k, v in message.items() if k != "features"}  # an earlier version's
    n1.parts.gossip.absorb(earlier)
    assert not n1.cluster.supports("n2", "claimed-batch")
    n1.parts.gossip.absorb(message)
    assert n1.cluster.supports("n2", "claimed-batch")

"""Gossip parses a peer's ring only when it differs from one already parsed: every message
carries the whole ring (256 shards by default, 0.7 ms to parse and check), and a settled
cluster's messages all carry the same one. Counted, not timed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.cluster import gossip
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

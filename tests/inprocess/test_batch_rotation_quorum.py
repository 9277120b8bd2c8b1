"""A batch that moves to a fresh actor mid-way still waits for every quorum it needs.

A QuorumWait whose groups were all satisfied while the coordinator awaited something (a
rotation to a fresh actor when a slot filled: a round trip to Redis) resolved at once, so
the groups added after that await, the fresh actor's writes and the batch's reads, were
never waited for: a 200 for a write one replica held, a quorum read from one replica.
"""

from __future__ import annotations

import asyncio

import pytest

from node.base.errors import QuorumTimeout, QuorumUnavailable
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster

BIG = 2**62


class _RoundTrip:
    """The durable replica as Redis is to a rotation: its incarnation call is a round trip
    (an await), where the embedded SQLite's returns without suspending."""

    def __init__(self, durable) -> None:  # type: ignore[no-untyped-def]
        self._durable = durable

    async def last_incarnation(self, node_id: str, current: int) -> int:
        await asyncio.sleep(0.02)
        return int(await self._durable.last_incarnation(node_id, current))


async def _fill_slot(node, key) -> None:  # type: ignore[no-untyped-def]
    """This node's slot of key at 3 * 2**62 each way: the next +2**62 fills P."""
    for step in range(6):
        (result,) = await node.coordinator.run(
            [Op(OpKind.INCREMENT, key, BIG if step % 2 == 0 else -BIG)], "quorum"
        )
        assert result.problem is None, result


async def test_a_quorum_read_in_a_batch_that_rotates_is_answered_from_a_quorum(
    inproc: InProcessCluster, monkeypatch: pytest.MonkeyPatch
):
    await inproc.start(3)
    full = inproc.key_where(lambda replicas: True)
    a_id, b_id, c_id = inproc.replicas(full)
    a, b, c = (inproc.nodes[n] for n in (a_id, b_id, c_id))
    plain = next(("t", "ns", f"p{i}") for i in range(1000) if inproc.replicas(("t", "ns", f"p{i}")))
    read = next(
        ("t", "ns", f"r{i}")
        for i in range(1000)
        if ("t", "ns", f"r{i}") not in (full, plain) and inproc.replicas(("t", "ns", f"r{i}"))
    )
    await _fill_slot(a, full)
    await inproc.pause_gossip()  # no anti-entropy: a stays without b's write of `read`

    # b writes `read` at quorum while its frames to a are lost: held by b and c, acknowledged
    inproc.network.partition([b.address], [a.address], one_way=True)
    (written,) = await b.coordinator.run([Op(OpKind.INCREMENT, read, 7)], "quorum")
    assert written.problem is None and written.value == 7, written
    assert a.value(read) is None and c.value(read) == 7
    inproc.network.heal()

    # a's batch: a plain increment, one that fills a's slot (a rotation: an await), and a
    # quorum read of `read`, which must ask b or c and so see the acknowledged 7
    ops = [
        Op(OpKind.INCREMENT, plain, 1),
        Op(OpKind.INCREMENT, full, BIG),
        Op(OpKind.GET, read),
    ]
    rotation = a.coordinator.rotation
    monkeypatch.setattr(rotation, "durable", _RoundTrip(rotation.durable))
    rotations = rotation.rotations
    results = await a.coordinator.run(ops, "quorum")
    assert a.coordinator.rotation.rotations == rotations + 1  # the batch did rotate
    assert [r.problem for r in results] == [None, None, None], results
    assert results[2].value == 7, f"quorum read missed an acknowledged write: {results[2]}"


async def test_a_fresh_actors_write_in_a_batch_waits_for_its_quorum(
    inproc: InProcessCluster, monkeypatch: pytest.MonkeyPatch
):
    await inproc.start(5)
    full = inproc.key_where(lambda replicas: True)
    a_id, d_id, e_id = inproc.replicas(full)
    a = inproc.nodes[a_id]
    plain = next(
        ("t", "ns", f"p{i}")
        for i in range(1000)
        if a_id in inproc.replicas(("t", "ns", f"p{i}"))
        and not {d_id, e_id} & set(inproc.replicas(("t", "ns", f"p{i}")))
    )
    await _fill_slot(a, full)
    await inproc.pause_gossip()  # views stay: d and e stay up in a's view
    # a's messages to full's other replicas are lost; plain's replicas answer
    inproc.network.partition([a.address], [inproc.nodes[d_id].address], one_way=True)
    inproc.network.partition([a.address], [inproc.nodes[e_id].address], one_way=True)

    ops = [Op(OpKind.INCREMENT, plain, 1), Op(OpKind.INCREMENT, full, BIG)]
    rotation = a.coordinator.rotation
    monkeypatch.setattr(rotation, "durable", _RoundTrip(rotation.durable))
    rotations = rotation.rotations
    try:
        results = await a.coordinator.run(ops, "quorum")
    except (QuorumTimeout, QuorumUnavailable):
        return  # what should happen: full's write reached 1 of the 2 replicas it needs
    assert a.coordinator.rotation.rotations == rotations + 1
    held = sum(
        1 for n in inproc.replicas(full) if (inproc.nodes[n].value(full) or 0) == a.value(full)
    )
    pytest.fail(
        f"answered {[(r.value, r.problem) for r in results]} for a quorum write held by "
        f"{held} replica(s) of {inproc.replicas(full)}"
    )

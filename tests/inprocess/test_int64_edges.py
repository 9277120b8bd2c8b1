"""Values at the edge of int64, and slots that fill up (issue 11).

Two replicas that each push a counter toward INT64_MAX without seeing the other merge to an
exact value outside int64. Nothing may refuse that state: the links stay open, the receipts
and the history take it, and clients read INT64_MAX marked `saturated` (crdt/pncounter.py).
Alternating large deltas fill this node's own slot although the value stays in range; the
node moves to a fresh actor and keeps answering (node/coordination/rotation.py).
"""

from __future__ import annotations

import asyncio

from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, eventually

INT64_MAX = 2**63 - 1
BIG = 2**62


async def _increment(node, key, delta, consistency="quorum", idem="") -> OpResult:  # type: ignore[no-untyped-def]
    [result] = await node.coordinator.run(
        [Op(OpKind.INCREMENT, key, delta, idem)], consistency, fingerprint=f"+{delta}"
    )
    return result


async def _get(node, key, consistency="all") -> OpResult:  # type: ignore[no-untyped-def]
    [result] = await node.coordinator.run([Op(OpKind.GET, key)], consistency)
    return result


async def test_concurrent_increments_past_int64_merge_without_closing_links(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "edge")
    first, second, third = (inproc.nodes[n] for n in inproc.replicas(key))
    # first and second cannot reach each other: each increments as if alone
    inproc.network.partition([first.address], [second.address])
    near = INT64_MAX - 10
    one = await _increment(first, key, near, consistency="one")
    two = await _increment(second, key, near, consistency="one")
    assert (one.value, two.value) == (near, near), (one, two)
    inproc.network.heal()
    exact = 2 * near
    await inproc.converged(key, exact)  # the exact state, held by every replica

    # every node answers the documented value: INT64_MAX, marked
    for node in (first, second, third):
        read = await _get(node, key)
        assert (read.value, read.saturated, read.problem) == (INT64_MAX, True, None), read
    # a keyed increment's receipt carries the (saturated) value to every replica
    keyed = await _increment(second, key, -5, consistency="all", idem="edge-1")
    assert (keyed.value, keyed.saturated, keyed.problem) == (INT64_MAX, True, None), keyed
    replay = await _increment(third, key, -5, consistency="all", idem="edge-1")
    assert (replay.value, replay.replayed, replay.problem) == (INT64_MAX, True, None), replay
    # an increment moving further out is refused; one moving back in is taken
    further = await _increment(first, key, 1)
    assert further.problem is not None and further.problem["status"] == 422, further
    back = await _increment(first, key, -(exact - 5 - 7))
    assert (back.value, back.saturated, back.problem) == (7, False, None), back
    await inproc.converged(key, 7)
    for node in (first, second, third):
        assert all(link.connected for link in node.parts.pool.links()), node
    # the durable replicas took the state and the receipts (write-behind, then flushed)
    await eventually(
        lambda: all(node.store.dirty_count() == 0 for node in (first, second, third)),
        "every replica flushed to its durable replica",
    )


async def test_alternating_large_deltas_keep_answering_with_the_exact_value(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "swing")
    coordinator = inproc.nodes[inproc.replicas(key)[0]]
    actor = coordinator.cluster.actor
    expected = 0
    for step in range(40):  # every 4th slot of P (or N) fills a uint64 slot
        delta = BIG if step % 2 == 0 else -BIG
        expected += delta
        idem = f"swing-{step}" if step % 3 == 0 else ""  # keyed ops take the same path
        result = await _increment(coordinator, key, delta, idem=idem)
        assert (result.problem, result.value) == (None, expected), (step, result)
    assert coordinator.cluster.actor != actor  # it moved to a fresh slot (more than once)
    await inproc.converged(key, expected)
    state = coordinator.store.get(key)
    assert state is not None and state.value() == expected


async def test_requests_in_flight_across_a_rotation_keep_their_slots_labelled(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "busy")
    coordinator = inproc.nodes[inproc.replicas(key)[0]]
    expected = 0
    for step in range(6):  # this node's slot at 3 * 2**62 each way: a quarter left
        delta = BIG if step % 2 == 0 else -BIG
        expected += delta
        assert (await _increment(coordinator, key, delta)).value == expected
    actor = coordinator.cluster.actor
    small = 2**58  # 20 of them fill the quarter; no order of 40 leaves int64
    deltas = [small if i % 2 == 0 else -small for i in range(40)]
    results = await asyncio.gather(
        *(
            _increment(coordinator, key, delta, idem=f"busy-{i}" if i % 4 == 0 else "")
            for i, delta in enumerate(deltas)
        )
    )
    assert [result.problem for result in results] == [None] * len(deltas)
    assert coordinator.cluster.actor != actor
    expected += sum(deltas)
    await inproc.converged(key, expected)
    states = {node.node_id: node.store.get(key) for node in inproc.live()}
    assert len(set(states.values())) == 1, states  # same slots, each under its own actor


async def test_a_batch_that_rotates_twice_sends_each_slot_under_its_own_actor(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    first = inproc.key_where(lambda replicas: True)
    node = inproc.nodes[inproc.replicas(first)[0]]
    second = next(
        ("t", "ns", f"other{i}")
        for i in range(1000)
        if inproc.replicas(("t", "ns", f"other{i}"))[0] == node.node_id
    )
    for key in (first, second):  # both slots of this node at 3 * 2**62 each way
        for step in range(6):
            await _increment(node, key, BIG if step % 2 == 0 else -BIG)
    actor = node.cluster.actor
    # first's op moves the node to K+1; second's eight fill K+1's slot too, so it moves to
    # K+2 while first's K+1 slot still waits to be sent
    ops = [Op(OpKind.INCREMENT, first, BIG)]
    ops += [Op(OpKind.INCREMENT, second, BIG if i % 2 == 0 else -BIG) for i in range(8)]
    results = await node.coordinator.run(ops, "all")
    assert [result.problem for result in results] == [None] * len(ops)
    assert node.cluster.incarnation == int(actor.rpartition(":")[2]) + 2
    await inproc.converged(first, BIG)
    await inproc.converged(second, 0)
    for key in (first, second):
        states = {n.node_id: n.store.get(key) for n in inproc.live()}
        assert len(set(states.values())) == 1, states

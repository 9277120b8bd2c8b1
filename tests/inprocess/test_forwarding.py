"""The coordinator's failure paths when it forwards: the hop limit, a forward that fails or
comes back malformed, and a 504 passed back from replicas that stay silent.

Four nodes, N=3: the entry node `e` is not a replica of the counter, so it forwards every op
to the shard's coordinator `p0`. What the client relies on is `may_have_applied`: true only
when the op could have changed a counter, and then the final total shows that it did.
"""

from __future__ import annotations

from typing import Any

from node.cluster import wire
from node.coordination.coordinator import MAX_HOPS
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node


async def _four(inproc: InProcessCluster) -> tuple[tuple[str, str, str], Node, list[Node]]:
    """The counter, the entry node, and the counter's replicas in preference order."""
    await inproc.start(4)
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    return key, inproc.nodes["n4"], [inproc.nodes[n] for n in inproc.replicas(key)]


def _problem(result: OpResult, status: int) -> dict[str, Any]:
    assert result.problem is not None, result
    assert result.problem["status"] == status, result.problem
    return result.problem


async def test_views_that_disagree_about_who_serves_are_refused_at_the_hop_limit(
    inproc: InProcessCluster,
):
    key, entry, (p0, p1, _) = await _four(inproc)
    await inproc.pause_gossip()  # nobody corrects the views below
    # p0 and p1 each believe they are still recovering, and that the other one serves: the
    # entry forwards to p0, p0 to p1, and p1 would send it back.
    p0.cluster.recovered = p1.cluster.recovered = False
    sent = inproc.network.sent[wire.FORWARD]

    (result,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 3)], "quorum")

    problem = _problem(result, 503)
    assert problem["may_have_applied"] is False
    assert f"within {MAX_HOPS} forwards" in problem["detail"]
    assert inproc.network.sent[wire.FORWARD] - sent == MAX_HOPS
    assert all(node.value(key) is None for node in inproc.nodes.values())


async def test_a_forward_that_fails_may_have_applied_its_increments_but_not_its_reads(
    inproc: InProcessCluster,
):
    key, entry, (p0, *_) = await _four(inproc)
    inproc.network.partition([p0.address], [entry.address], one_way=True)  # replies lost

    increment, get = await entry.coordinator.run(
        [Op(OpKind.INCREMENT, key, 5), Op(OpKind.GET, key)], "quorum"
    )

    assert "forwarding to" in _problem(increment, 503)["detail"]
    assert _problem(increment, 503)["may_have_applied"] is True
    assert _problem(get, 503)["may_have_applied"] is False
    inproc.network.heal()
    await inproc.converged(key, 5)  # it had applied, as the answer allowed


async def test_a_forwarded_reset_that_fails_may_have_applied(inproc: InProcessCluster):
    key, entry, (p0, *_) = await _four(inproc)
    assert (await entry.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "quorum"))[0].ok
    inproc.network.partition([p0.address], [entry.address], one_way=True)

    (reset,) = await entry.coordinator.run([Op(OpKind.RESET, key)], "quorum")

    assert _problem(reset, 503)["may_have_applied"] is True
    inproc.network.heal()
    await inproc.converged(key, 0)  # the reset had applied


async def test_a_malformed_forward_reply_is_a_503_that_may_have_applied_writes(
    inproc: InProcessCluster,
):
    key, entry, _ = await _four(inproc)
    inproc.network.tamper(wire.FORWARD, lambda reply: [{"value": "seven"}], src=entry.address)

    (increment,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 7)], "quorum")
    (get,) = await entry.coordinator.run([Op(OpKind.GET, key)], "quorum")

    assert "bad forward reply" in _problem(increment, 503)["detail"]
    assert _problem(increment, 503)["may_have_applied"] is True
    assert _problem(get, 503)["may_have_applied"] is False
    # In one forward, each op says for itself whether it may have applied.
    mixed = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 7), Op(OpKind.GET, key)], "all")
    assert [_problem(r, 503)["may_have_applied"] for r in mixed] == [True, False]
    inproc.network.heal()
    await inproc.converged(key, 14)
    assert (await entry.coordinator.run([Op(OpKind.GET, key)], "quorum"))[0].value == 14


async def test_replicas_that_stay_silent_give_a_504_through_the_forward(
    inproc: InProcessCluster,
):
    key, entry, (p0, p1, p2) = await _four(inproc)
    inproc.network.partition([p1.address, p2.address], [p0.address], one_way=True)

    (result,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 9)], "quorum")

    problem = _problem(result, 504)
    assert problem["type"].endswith("/quorum-timeout")
    assert problem["may_have_applied"] is True
    assert entry.coordinator.quorum_failures == {"unavailable": 0, "timeout": 1}
    assert p0.coordinator.quorum_failures == {"unavailable": 0, "timeout": 0}  # counted once
    inproc.network.heal()
    await inproc.converged(key, 9)  # the increment the 504 was about did apply


async def test_a_coordinator_that_refuses_connections_is_passed_over_at_once(
    inproc: InProcessCluster,
):
    """Killed, the coordinator refuses connections while the failure detector still counts it
    up. A forward that never left ran nowhere: the entry runs the ops on the next serving
    replica instead of answering 503 "may have applied" until the node is marked down."""
    await inproc.start(4, failure_timeout_s=30.0)  # the detector stays out of it
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    entry = inproc.nodes["n4"]
    p0 = inproc.nodes[inproc.replicas(key)[0]]
    await inproc.kill(p0)
    assert entry.cluster.alive(p0.node_id)

    plain, keyed = await entry.coordinator.run(
        [Op(OpKind.INCREMENT, key, 5), Op(OpKind.INCREMENT, key, 7, idem="once")],
        "quorum",
        fingerprint="f",
    )

    assert plain.problem is None and keyed.problem is None, (plain, keyed)
    survivors = [inproc.nodes[n] for n in inproc.replicas(key)[1:]]
    await inproc.converged(key, 12, survivors)

"""Keyed batches as one group: a batch of many keyed ops costs a few peer messages, not two
per op; it applies once, replays exactly, and overlapping attempts still serialise."""

from __future__ import annotations

import asyncio

from node.cluster import wire
from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node

FINGERPRINT = "POST /v1/namespaces/ns/batch sha256:abc"


def _ops(key: tuple[str, str, str], count: int, idem: str = "batch-1") -> list[Op]:
    return [Op(OpKind.INCREMENT, key, 1, f"{idem}#{i}") for i in range(count)]


def _run(node: Node, ops: list[Op]) -> asyncio.Future[list[OpResult]]:
    return asyncio.ensure_future(node.coordinator.run(ops, "quorum", fingerprint=FINGERPRINT))


async def test_a_keyed_batch_on_one_counter_costs_a_few_messages_and_replays_exactly(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "k")
    coordinator = inproc.nodes[inproc.replicas(key)[0]]
    sent_before = dict(inproc.network.sent)

    results = await _run(coordinator, _ops(key, 500))

    assert [r.value for r in results] == list(range(1, 501))
    assert not any(r.replayed for r in results)
    sent = {k: n - sent_before.get(k, 0) for k, n in inproc.network.sent.items()}
    # R = 2: one peer, one reserve-or-read message for all 500 (fencing.py)
    assert sent.get(wire.RESERVE, 0) == 1
    assert sent.get(wire.RECEIPTS, 0) == sent.get(wire.RESOLVE, 0) == 0
    assert sent.get(wire.RECEIPT, 0) == 0
    assert sent.get(wire.REPLICATE, 0) == 2  # the slot and 500 receipts, once per peer
    await inproc.converged(key, 500)
    for node_id in inproc.replicas(key):
        assert inproc.nodes[node_id].store.receipt_count() == 500

    again = await _run(inproc.nodes[inproc.replicas(key)[2]], _ops(key, 500))  # any node

    assert [(r.value, r.replayed) for r in again] == [(v, True) for v in range(1, 501)]
    await inproc.converged(key, 500)


async def test_a_batch_over_many_counters_answers_each_in_order(inproc: InProcessCluster):
    await inproc.start(3)
    keys = [("t", "ns", f"c{i}") for i in range(40)]
    ops = [Op(OpKind.INCREMENT, keys[i % 40], i + 1, f"multi#{i}") for i in range(200)]

    results = await _run(inproc.nodes["n1"], ops)

    totals: dict[tuple[str, str, str], int] = {}
    for op, result in zip(ops, results, strict=True):
        totals[op.key] = totals.get(op.key, 0) + op.delta
        assert (result.value, result.replayed) == (totals[op.key], False), (op, result)
    for key in keys[:5]:
        await inproc.converged(key, totals[key])
    replayed = await _run(inproc.nodes["n2"], ops)
    assert [r.value for r in replayed] == [r.value for r in results]
    assert all(r.replayed for r in replayed)


async def test_overlapping_concurrent_batches_apply_each_op_once(inproc: InProcessCluster):
    await inproc.start(3)
    key = ("t", "ns", "k")
    first, second, third = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.delay(0.0, 0.03, kinds=[wire.FORWARD])  # arrivals in either order
    # a retry of a prefix, the whole batch, and a retry of a suffix, all at once
    attempts = [_ops(key, 60)[:30], _ops(key, 60), _ops(key, 60)[20:]]

    answers = await asyncio.gather(
        _run(second, attempts[0]), _run(third, attempts[1]), _run(first, attempts[2])
    )

    by_name: dict[str, set[int | None]] = {}
    for ops, results in zip(attempts, answers, strict=True):
        for op, result in zip(ops, results, strict=True):
            assert result.ok, result
            by_name.setdefault(op.idem, set()).add(result.value)
    assert all(len(values) == 1 for values in by_name.values()), by_name  # one answer per op
    assert sorted(v for values in by_name.values() for v in values) == list(range(1, 61))
    await inproc.converged(key, 60)


async def test_a_different_request_under_used_keys_is_refused_op_by_op(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = ("t", "ns", "k")
    node = inproc.nodes[inproc.replicas(key)[0]]
    await _run(node, _ops(key, 3))

    other = node.coordinator.run(_ops(key, 5), "quorum", fingerprint="another request")
    results = await other

    assert [r.problem and r.problem["type"].rsplit("/")[-1] for r in results[:3]] == [
        "idempotency-key-reused"
    ] * 3
    assert [r.value for r in results[3:]] == [4, 5]  # new names apply
    await inproc.converged(key, 5)


def _claimed(idem: str, ops: list[Op]) -> list[Op]:
    """A batch as the HTTP handler sends it: its claim first, then its ops."""
    return [Op(OpKind.CLAIM, claim_key("t", idem), 0, idem), *ops]


async def test_a_batch_whose_claim_is_refused_applies_none_of_its_ops(inproc: InProcessCluster):
    """The claim and the ops run as one group (one forward, one reservation round): the
    claim still gates them, so a different request under a used key applies nothing, not
    even the ops past the first request's (which no receipt refuses)."""
    await inproc.start(3)
    key = ("t", "ns", "k")
    for asked in ("n1", "n2", "n3"):  # home, and forwarded to it
        idem = f"used-{asked}"
        node = inproc.nodes[asked]
        first = await node.coordinator.run(
            _claimed(idem, _ops(key, 2, idem)), "quorum", fingerprint=FINGERPRINT
        )
        assert all(r.ok for r in first), first
        before = node.value(key)
        sent_before = dict(inproc.network.sent)

        other = await node.coordinator.run(
            _claimed(idem, _ops(key, 5, idem)), "quorum", fingerprint="another request"
        )

        assert [r.problem and r.problem["type"].rsplit("/")[-1] for r in other] == [
            "idempotency-key-reused"
        ] * 6
        # the home holds the claim's receipt: it refuses before reserving anything
        assert inproc.network.sent[wire.RESERVE] == sent_before.get(wire.RESERVE, 0)
        await inproc.settled()
        for node_id in inproc.replicas(key):
            assert inproc.nodes[node_id].value(key) == before


async def test_a_keyed_batch_and_its_claim_take_one_forward_and_one_reservation_round(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    keys = [("t", "ns", f"k{i}") for i in range(40)]
    for asked in ("n1", "n2", "n3"):
        idem = f"one-round-{asked}"
        home = inproc.replicas(claim_key("t", idem))[0]
        sent_before = dict(inproc.network.sent)
        ops = [Op(OpKind.INCREMENT, key, 1, f"{idem}#{i}") for i, key in enumerate(keys)]

        results = await inproc.nodes[asked].coordinator.run(
            _claimed(idem, ops), "quorum", fingerprint=FINGERPRINT
        )

        assert [r.value for r in results[1:]] == [int(asked[1])] * 40  # n1, n2, n3 in turn
        sent = {k: n - sent_before.get(k, 0) for k, n in inproc.network.sent.items()}
        assert sent.get(wire.FORWARD, 0) == (0 if asked == home else 1)
        # R = 2: one RESERVE per read peer for the claim and the ops together (at most the
        # two others), where a claim run first took one more round trip of its own
        assert 1 <= sent.get(wire.RESERVE, 0) <= 2


async def test_a_batch_goes_whole_only_to_a_home_whose_gossip_says_it_gates(
    inproc: InProcessCluster,
):
    """A node of an earlier version would apply the ops of a failed claim: until its gossip
    says "claimed-batch", the claim is forwarded first and the ops only after it."""
    await inproc.start(3)
    idem = "mixed-versions"
    home = inproc.replicas(claim_key("t", idem))[0]
    asked = inproc.nodes[next(n for n in ("n1", "n2", "n3") if n != home)]
    assert asked.cluster.supports(home, "claimed-batch")  # every node of this version says so
    await inproc.pause_gossip()
    del asked.cluster.features[home]  # as if home ran an earlier version
    sent_before = dict(inproc.network.sent)

    results = await asked.coordinator.run(
        _claimed(idem, _ops(("t", "ns", "k"), 3, idem)), "quorum", fingerprint=FINGERPRINT
    )

    assert [r.value for r in results[1:]] == [1, 2, 3]
    assert inproc.network.sent[wire.FORWARD] - sent_before.get(wire.FORWARD, 0) == 2


async def test_a_batch_refused_at_its_claim_counts_one_quorum_failure(inproc: InProcessCluster):
    await inproc.start(3)
    idem = "cut-off"
    home = inproc.nodes[inproc.replicas(claim_key("t", idem))[0]]
    for node in inproc.nodes.values():
        if node is not home:
            inproc.network.isolate(node.address)
    failures = sum(home.coordinator.quorum_failures.values())

    results = await home.coordinator.run(
        _claimed(idem, _ops(("t", "ns", "k"), 10, idem)), "all", fingerprint=FINGERPRINT
    )

    assert not any(r.ok for r in results)
    assert sum(home.coordinator.quorum_failures.values()) == failures + 1

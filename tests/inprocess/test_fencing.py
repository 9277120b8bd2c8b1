"""A retry never applies a keyed increment twice, however the first attempt's coordinator
failed (node/coordination/fencing.py, issue 11).

The seeded network plays the faults: the first coordinator's replication frames are lost (so
only its own slot holds the increment) and then it is cut off until the others mark it down;
or its grants come back late while another node, which believes it down, runs a retry; or
its process dies holding reservations. After the heal every replica holds each key once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from node.cluster import wire
from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind, OpResult
from tests.inprocess.cluster import InProcessCluster, Node, eventually

FINGERPRINT = "POST /v1/namespaces/ns/counters/k/increment +5"
# every way a state leaves a node: writes, anti-entropy pushes, hand-off pull replies
REPLICATION = [wire.SLOTS, wire.REPLICATE, wire.PUSH, wire.PULL]


async def _attempt(node: Node, key: tuple[str, str, str], idem: str = "order-1") -> OpResult:
    op = Op(OpKind.INCREMENT, key, 5, idem=idem)
    (result,) = await node.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)
    return result


async def _cut_off_after_applying(inproc: InProcessCluster) -> tuple[tuple[str, ...], Node]:
    """The first attempt applies on the coordinator, whose write never leaves it; then the
    coordinator is cut off until the others mark it down. Returns (the key, coordinator)."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first = inproc.nodes[inproc.replicas(key)[0]]
    inproc.network.drop(1.0, src=first.address, kinds=REPLICATION)

    lost = await _attempt(first, key)

    assert lost.problem is not None and lost.problem["may_have_applied"] is True, lost
    assert first.value(key) == 5  # applied here, and nowhere else
    inproc.network.isolate(first.address)
    others = [inproc.nodes[n] for n in inproc.replicas(key)[1:]]
    await eventually(
        lambda: all(first.node_id in n.cluster.down for n in others),
        f"{first.node_id} marked down",
    )
    return key, first


async def test_a_retry_while_the_first_coordinator_is_cut_off_is_in_doubt_not_applied(
    inproc: InProcessCluster,
):
    key, _ = await _cut_off_after_applying(inproc)
    second = inproc.nodes[inproc.replicas(key)[1]]

    retry = await _attempt(second, key)

    # the holder of the first attempt cannot be asked: neither applied again nor a 200
    assert retry.problem is not None, retry
    assert retry.problem["status"] == 503 and retry.problem["type"].endswith("/in-doubt"), retry
    assert retry.problem["may_have_applied"] is True
    assert retry.problem["retry_after_s"] >= 1
    assert second.value(key) in (None, 0)
    assert second.coordinator.idempotent.fence.in_doubt == 1  # counted for /metrics

    inproc.network.heal()
    await inproc.settled()
    again = await _attempt(second, key)

    assert (again.value, again.replayed) == (5, True), again
    await inproc.converged(key, 5, nodes=inproc.live())


async def test_the_key_is_counted_once_when_the_cut_off_coordinator_comes_back(
    inproc: InProcessCluster,
):
    key, first = await _cut_off_after_applying(inproc)
    third = inproc.nodes[inproc.replicas(key)[2]]
    for _ in range(3):  # clients keep retrying elsewhere while it is away
        await _attempt(third, key)

    inproc.network.heal()
    await inproc.settled()

    # the first attempt's slot reaches every replica (a retry's replay, anti-entropy);
    # whatever the retries answered, the key counts once
    final = await _attempt(first, key)
    assert (final.value, final.replayed) == (5, True), final
    await inproc.converged(key, 5, nodes=inproc.live())


async def test_an_attempt_that_never_applied_is_aborted_by_the_retry(inproc: InProcessCluster):
    """The first coordinator reserved the key at a quorum but its answer never came back
    (it failed before applying): the retry asks it, it gives the attempt up, the retry
    applies, and the first attempt can never apply afterwards."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    # the first attempt's reservation reaches the peers, their grants never come back
    inproc.network.drop(1.0, dst=first.address, kinds=[wire.RESERVE])

    lost = await _attempt(first, key)

    assert lost.problem is not None and lost.problem["may_have_applied"] is False, lost
    assert first.value(key) in (None, 0)
    inproc.network.heal()
    retry = await _attempt(second, key)
    # the retry ran on the first coordinator again (it serves), so it just re-reserved
    assert (retry.value, retry.replayed) == (5, False), retry
    await inproc.converged(key, 5, nodes=inproc.live())


async def test_two_nodes_that_both_believe_they_coordinate_apply_once(inproc: InProcessCluster):
    """Views disagree: the first replica runs an attempt, and the second, which believes the
    first down, runs a retry while the first attempt's grants are on their way. The retry
    asks the first replica, which gives its attempt up before it applies; that attempt then
    answers in doubt instead of applying, and the key counts once."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    await inproc.pause_gossip([second])
    inproc.network.drop(1.0, src=first.address, dst=second.address, kinds=[wire.GOSSIP])
    inproc.network.drop(1.0, dst=first.address, kinds=[wire.PUSH])  # no receipt by anti-entropy
    second.cluster.down = frozenset({first.node_id})  # the second's view: the first is down
    shard = first.cluster.shard_of(key)
    op = Op(OpKind.INCREMENT, key, 5, idem="order-1")
    inproc.network.delay(0.1, 0.15, dst=first.address, kinds=[wire.RECEIPTS, wire.RESERVE])
    early = asyncio.ensure_future(
        first.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
    )
    now_ms = int(time.time() * 1000)
    await eventually(
        lambda: second.store.reservations.reservation(key, "order-1", now_ms) is not None,
        "the first attempt's reservation on the second replica",
    )

    late = await second.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
    superseded = await early

    assert (late.value, late.replayed) == (5, False), late
    assert superseded.problem is not None, superseded
    assert superseded.problem["type"].endswith("/in-doubt"), superseded
    state = first.store.get(key)
    assert state is None or state.slot(first.cluster.actor) == (0, 0)  # it never applied
    inproc.network.heal()
    inproc.resume_gossip([second])
    await inproc.settled()
    await inproc.converged(key, 5, nodes=inproc.live())


async def test_a_retry_gives_up_an_attempt_whose_holder_has_not_applied_it(
    inproc: InProcessCluster,
):
    """The first replica holds the key for an attempt of its own that has not applied yet
    (it reserved, its grants are on their way); a retry on the second replica asks it, it
    gives the attempt up (so that attempt can no longer apply), and the retry applies."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(key))
    shard = first.cluster.shard_of(key)
    fence = first.coordinator.idempotent.fence
    now_ms = int(time.time() * 1000)
    assert fence.book.reserve(key, "order-1", first.node_id, fence.token, now_ms) is None
    assert fence.holds(key, "order-1", now_ms)
    op = Op(OpKind.INCREMENT, key, 5, idem="order-1")

    retry = await second.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)

    assert (retry.value, retry.replayed) == (5, False), retry
    assert not fence.holds(key, "order-1", now_ms)  # that attempt would refuse to apply
    assert inproc.network.sent[wire.RESOLVE] == 1
    await inproc.converged(key, 5, nodes=inproc.live())
    (late,) = await first.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)
    assert (late.value, late.replayed) == (5, True), late


async def test_a_reservation_of_a_restarted_coordinator_is_void_once_every_replica_says_so(
    inproc: InProcessCluster,
):
    """The first attempt reserved the key and its process died before applying; after a
    restart its reservation belongs to no live process: the retry asks every replica for a
    receipt, finds none, and applies once."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first = inproc.nodes[inproc.replicas(key)[0]]
    inproc.network.drop(1.0, dst=first.address, kinds=[wire.RESERVE])  # grants never return
    lost = await _attempt(first, key)
    assert lost.problem is not None and lost.problem["may_have_applied"] is False, lost
    inproc.network.heal()
    await inproc.kill(first)
    restarted = await inproc.restart(first)
    await inproc.settled()
    sent = inproc.network.sent[wire.RESOLVE]

    retry = await _attempt(inproc.nodes[inproc.replicas(key)[1]], key)

    assert (retry.value, retry.replayed) == (5, False), retry
    await inproc.converged(key, 5, nodes=inproc.live())
    assert restarted.coordinator.idempotent.fence.superseded == 1
    assert inproc.network.sent[wire.RESOLVE] == sent  # it asked itself, over no link


async def test_a_keyed_batch_retried_while_its_coordinator_is_cut_off_counts_once(
    inproc: InProcessCluster,
):
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    # the batch's ops run at its home, its claim counter's coordinator (every node serves
    # every shard here)
    first, second, _ = (inproc.nodes[n] for n in inproc.replicas(claim_key("t", "batch-1")))
    ops = [Op(OpKind.INCREMENT, key, i + 1, idem=f"batch-1#{i}") for i in range(50)]
    total = sum(op.delta for op in ops)
    inproc.network.drop(1.0, src=first.address, kinds=REPLICATION)
    lost = await first.coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)
    assert all(r.problem is not None and r.problem["may_have_applied"] for r in lost), lost
    inproc.network.isolate(first.address)
    await eventually(lambda: first.node_id in second.cluster.down, "the first marked down")

    retry = await second.coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)

    assert all(r.problem is not None and r.problem["type"].endswith("/in-doubt") for r in retry), {
        r.problem["detail"] if r.problem else r.value for r in retry
    }
    inproc.network.heal()
    await inproc.settled()
    again = await second.coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)
    assert [(r.value, r.replayed) for r in again] == [
        (sum(range(1, i + 2)), True) for i in range(50)
    ], again
    await inproc.converged(key, total, nodes=inproc.live())


async def test_a_void_reservation_stays_in_doubt_while_a_replica_cannot_answer(
    inproc: InProcessCluster,
):
    """After the holder restarted, its old attempt may have applied and sent its slot and
    receipt to any replica: with one replica down the retry cannot rule that out."""
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    first, _, third = (inproc.nodes[n] for n in inproc.replicas(key))
    inproc.network.drop(1.0, dst=first.address, kinds=[wire.RESERVE])  # grants never return
    lost = await _attempt(first, key)
    assert lost.problem is not None and lost.problem["may_have_applied"] is False, lost
    inproc.network.heal()
    await inproc.kill(first)
    await inproc.kill(third)
    first = await inproc.restart(first)
    await inproc.settled()

    retry = await _attempt(first, key)

    assert retry.problem is not None and retry.problem["type"].endswith("/in-doubt"), retry
    third = await inproc.restart(third)
    await inproc.settled()
    again = await _attempt(first, key)
    assert (again.value, again.replayed) == (5, False), again
    await inproc.converged(key, 5, nodes=inproc.live())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_keyed_retries_under_random_faults_count_every_key_exactly_once(
    tmp_path: Path, seed: int
):
    """A seeded run: attempts of ten keys land on random nodes; a node (most often the
    key's coordinator), whose writes may never leave it, is then cut off or killed and the
    same keys are retried on the others; then it heals or restarts. At the end each key is
    retried until it answers 200: the counter must hold every key's delta exactly once (a
    double would show as more, a loss could not be retried away)."""
    inproc = InProcessCluster(tmp_path, seed=seed)
    try:
        await _random_faults_then_retries(inproc)
    finally:
        await inproc.close()


async def _random_faults_then_retries(inproc: InProcessCluster) -> None:
    await inproc.start(3)
    key = inproc.key_where(lambda replicas: True)
    rng = inproc.network.random
    deltas = {f"order-{i}": i + 1 for i in range(10)}

    async def attempt(node: Node, idem: str) -> OpResult:
        op = Op(OpKind.INCREMENT, key, deltas[idem], idem=idem)
        (result,) = await node.coordinator.run([op], "quorum", fingerprint=f"{FINGERPRINT}{idem}")
        return result

    for _ in range(10):
        # the victim is most often the key's coordinator, whose failure is the hard case
        coordinator = inproc.replicas(key)[0]
        victim = inproc.nodes[rng.choice([coordinator, coordinator, *sorted(inproc.nodes)])]
        if rng.random() < 0.7:  # its writes never leave it
            inproc.network.drop(1.0, src=victim.address, kinds=REPLICATION)
        idems = rng.sample(sorted(deltas), 3)
        live = inproc.live()
        await asyncio.gather(*(attempt(rng.choice(live), idem) for idem in idems))
        # then it is cut off or killed, and clients retry on the others
        if rng.random() < 0.5:
            inproc.network.isolate(victim.address)
        else:
            await inproc.kill(victim)
        others = [n for n in inproc.live() if n is not victim]
        await eventually(
            lambda others=others, victim=victim: all(
                victim.node_id in n.cluster.down for n in others
            ),
            f"{victim.node_id} marked down",
        )
        await asyncio.gather(*(attempt(rng.choice(others), idem) for idem in idems))
        inproc.network.heal()
        if not victim.alive:
            await inproc.restart(victim)
        await inproc.settled()

    for idem in sorted(deltas):
        answers: list[OpResult] = []
        for _ in range(50):  # bounded: each try is bounded by the request timeout
            answers.append(await attempt(inproc.live()[0], idem))
            if answers[-1].ok:
                break
        assert answers[-1].ok, answers[-3:]
    await inproc.converged(key, sum(deltas.values()), nodes=inproc.live(), timeout=10)


async def test_two_attempts_that_give_each_other_up_never_both_apply(inproc: InProcessCluster):
    """Two attempts of one key run at once on two replicas outside each other's read peers
    (N=5, R=W=3: each asks the first two replicas). Each wins one of those two, so each
    sees the other holding the key and asks it to give its attempt up (RESOLVE), and both
    do. Neither may then take its own node's reservation back in its second round: each
    would supersede the other at the shared replicas, hold a majority, and apply."""
    # a request timeout whose hedge (1/8) waits out the 0.05 s delays below: a spare asked
    # sooner would grant instead, and the race would not happen
    await inproc.start(5, replicas=5, write_quorum=3, read_quorum=3, request_timeout_s=1.0)
    key = inproc.key_where(lambda replicas: True)
    first, second, _, a_node, b_node = (inproc.nodes[n] for n in inproc.replicas(key))
    # each attempt's RESERVE reaches one of the two shared replicas late: A wins the
    # first, B the second
    inproc.network.delay(0.05, 0.05, src=a_node.address, dst=second.address, kinds=[wire.RESERVE])
    inproc.network.delay(0.05, 0.05, src=b_node.address, dst=first.address, kinds=[wire.RESERVE])
    shard = a_node.cluster.shard_of(key)
    op = Op(OpKind.INCREMENT, key, 5, idem="order-1")

    results = await asyncio.gather(
        a_node.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT),
        b_node.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT),
    )

    assert inproc.network.sent[wire.RESOLVE] >= 2  # the race happened: each gave the other up
    applied = [r for r in results if r.problem is None]
    assert len(applied) <= 1, results
    for result in results:
        if result.problem is not None:
            assert result.problem["type"].endswith("/in-doubt"), result
    inproc.network.heal()
    await inproc.settled()
    retry = await a_node.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
    assert retry.value == 5 and retry.replayed == bool(applied), retry
    await inproc.converged(key, 5, nodes=inproc.live())

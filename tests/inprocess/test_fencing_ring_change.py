"""A keyed increment retried across a ring change must still count once (fencing.py).

The fence reserves an Idempotency-Key at a majority of `cluster.replicas(shard)`: the
preference list of the ring the coordinator holds as current. During a join two nodes can
hold different current rings: one that has not heard of the switch yet still uses the old
preference list, another already uses the new one. Two majorities of two different replica
sets need not intersect, so two attempts of one key can both be granted and both apply.

Three nodes, then n4 joins. One node (the old ring's coordinator of the chosen shard) hears
no gossip at all, as in test_handoff_barrier.py: it learns of the pending ring from n4's PULL
but not of the switch, so after the switch it still serves the shard from the old ring. The
shard is one where n4 replaced that node and where the old ring's coordinator and a node of
the new ring each ask a peer the other does not (N=3, one peer asked: R=2).

The client's first attempt runs on the stale node; its grant from its peer is slow to come
back, the client gives up and retries on a node of the new ring, which reserves at itself
and n4, applies and answers 200. Then the first attempt's grant arrives: it holds a majority
of ITS replica set and its own reservation was never asked about, so it applies as well.
"""

from __future__ import annotations

import asyncio
import time

from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from ring import Ring
from ring.claimant import handoff_mark
from tests.inprocess.cluster import InProcessCluster, Node, eventually

FINGERPRINT = "POST /v1/namespaces/ns/counters/k/increment +5"
DELTA = 5
IDEM = "order-1"
CLAIMANT = "n1"  # the smallest id changes the ring: it is never the stale node


def _first_peer(replicas: tuple[str, ...], me: str) -> str:
    """The one peer a coordinator asks to reserve (N=3, R=2: one grant besides its own):
    the first other replica in preference order (Replicator.read_peers, ask_peers)."""
    return next(n for n in replicas if n != me)


def _disjoint_majorities(old: Ring, new: Ring) -> tuple[int, str, str]:
    """(shard, stale coordinator, fresh coordinator): the stale one coordinates the shard in
    the old ring and leaves it in the new; the fresh one is a replica in the new ring; the
    two majorities they reserve at share no node."""
    options = []
    for shard in range(old.shards):
        before, after = old.table[shard], new.table[shard]
        for stale in before:
            if stale == CLAIMANT or stale in after:
                continue
            a = {stale, _first_peer(before, stale)}
            for fresh in after:
                if fresh in (stale, "n4"):
                    continue
                b = {fresh, _first_peer(after, fresh)}
                if not a & b:
                    # prefer the stale node being the old ring's coordinator of the shard
                    options.append((before[0] != stale, shard, stale, fresh))
    assert options, "no shard whose old and new majorities can be disjoint"
    _, shard, stale, fresh = min(options)
    return shard, stale, fresh


def _key_in(node: Node, shard: int) -> Key:
    cluster = node.cluster
    for i in range(100_000):
        key = ("t", "ns", f"k{i}")
        if cluster.shard_of(key) == shard:
            return key
    raise AssertionError(f"no key in shard {shard}")


async def test_a_keyed_retry_across_a_ring_switch_counts_once(inproc: InProcessCluster):
    nodes = await inproc.start(3, failure_timeout_s=30.0)  # nobody is marked down here
    by_id = {node.node_id: node for node in nodes}
    claimant = by_id[CLAIMANT]
    network = inproc.network

    # the pending ring a join of n4 makes: chosen before anything is made stale
    joiner = await inproc.launch("n4", seeds=())
    await eventually(lambda: joiner.cluster.ready, "n4 up on its own")
    await inproc.admit(claimant, joiner)
    await eventually(lambda: claimant.cluster.state.pending is not None, "a pending ring")
    old = claimant.cluster.state.current
    new = claimant.cluster.state.pending
    assert new is not None
    shard, stale_id, fresh_id = _disjoint_majorities(old, new)
    stale, fresh = by_id[stale_id], by_id[fresh_id]
    # The stale node hears no gossip from here on (its own still reaches the others, which
    # keep it alive): the switch never reaches it. It learns of the pending ring only from
    # n4's PULL, as a real source does (test_handoff_barrier.py).
    network.drop(1.0, dst=stale.address, kinds=[wire.GOSSIP])
    mark = handoff_mark(new)
    await eventually(
        lambda: joiner.cluster.synced.get("n4") == mark, "n4 caught up", show=inproc.describe
    )
    await eventually(
        lambda: (
            all(
                by_id[n].cluster.state.current == new and by_id[n].cluster.state.pending is None
                for n in (CLAIMANT, fresh_id)
            )
            and joiner.cluster.state.current == new
            and fresh.cluster.serving("n4")
        ),
        "the ring switched everywhere but on the stale node",
        10.0,
        show=inproc.describe,
    )
    assert stale.cluster.state.current == old, inproc.describe()  # a real node mid-join
    key = _key_in(fresh, shard)
    assert stale.cluster.shard_of(key) == shard
    old_replicas = stale.cluster.replicas(shard)
    new_replicas = fresh.cluster.replicas(shard)
    assert old_replicas == old.table[shard] and new_replicas == new.table[shard]
    a_peer = _first_peer(old_replicas, stale_id)
    b_peer = _first_peer(new_replicas, fresh_id)
    assert not {stale_id, a_peer} & {fresh_id, b_peer}, (old_replicas, new_replicas)

    # The first attempt, on the stale node: its RESERVE reaches its peer at once (which
    # grants and records the reservation), the grant comes back slowly.
    op = Op(OpKind.INCREMENT, key, DELTA, idem=IDEM)
    network.delay(0.15, 0.15, src=by_id[a_peer].address, dst=stale.address, kinds=[wire.RESERVE])
    first = asyncio.ensure_future(
        stale.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
    )
    await eventually(
        lambda: by_id[a_peer].store.reservations.reservation(key, IDEM, _now_ms()) is not None,
        "the first attempt's reservation at its peer",
    )
    # The client's retry, on a node of the new ring, while the first is still in flight.
    retry = await fresh.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
    attempt = await first

    results = [attempt, retry]
    applied = [r for r in results if r.ok and not r.replayed]
    network.heal()
    await inproc.settled(timeout=10.0)
    # once every node holds the new ring, the client retries until it gets an answer: a
    # replay if an attempt applied, else the one apply
    for _ in range(20):
        final = await fresh.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT)
        if final.ok:
            break
    assert final.ok, final
    holders = [inproc.nodes[n] for n in new_replicas]

    def agreed() -> bool:
        values = {node.value(key) for node in holders}
        return len(values) == 1 and None not in values

    await eventually(
        agreed,
        "the new replicas agree",
        show=lambda: {n.node_id: n.value(key) for n in holders},
    )
    value = holders[0].value(key)
    assert value == DELTA and len(applied) <= 1, (
        f"key counted {value} (delta {DELTA}); applied by {len(applied)} attempts: "
        f"old replicas {old_replicas} (attempt on {stale_id}, granted by {a_peer}), "
        f"new replicas {new_replicas} (retry on {fresh_id}, granted by {b_peer}); "
        f"first attempt {attempt}, retry {retry}, final {final}"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_keyed_op_in_flight_when_its_node_drops_the_shard_applies_nowhere(
    inproc: InProcessCluster,
):
    """A keyed increment waits for its grants on a replica that, meanwhile, loses the shard
    to a joiner and hands it over (drop_shard). Applied then, it would start the node's slot
    again from zero in a store that no longer holds it, and the per-slot max at the owners
    would hide it for good behind a 200. It must be refused with nothing applied; the
    client's retry then applies it once."""
    nodes = await inproc.start(3, failure_timeout_s=30.0, request_timeout_s=3.0)
    by_id = {node.node_id: node for node in nodes}
    claimant = by_id[CLAIMANT]
    old = claimant.cluster.state.current
    new = old.with_node("n4")  # the ring the claimant derives for the join
    shard, leaver = next(
        (shard, node_id)
        for shard in range(old.shards)
        for node_id in old.table[shard]
        if node_id not in new.table[shard]
    )
    node = by_id[leaver]
    key = _key_in(node, shard)
    (before,) = await node.coordinator.run([Op(OpKind.INCREMENT, key, 10)], "all")
    assert before.ok, before
    inproc.network.delay(1.2, 1.2, dst=node.address, kinds=[wire.RESERVE])  # slow grants
    op = Op(OpKind.INCREMENT, key, DELTA, idem=IDEM)
    first = asyncio.ensure_future(node.coordinator.idempotent.run(op, shard, "quorum", FINGERPRINT))
    await asyncio.sleep(0.05)

    joiner = await inproc.launch("n4", seeds=())
    await eventually(lambda: joiner.cluster.ready, "n4 up on its own")
    await inproc.admit(claimant, joiner)
    await eventually(
        lambda: shard not in node.store.shard_numbers() and node.cluster.state.current == new,
        f"{leaver} switched and dropped the shard",
        5.0,
        show=inproc.describe,
    )
    assert not first.done()  # its grants are still on their way
    attempt = await first

    assert attempt.problem is not None and attempt.problem["may_have_applied"] is False, attempt
    inproc.network.heal()
    await inproc.settled(timeout=10.0)
    retry = await claimant.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)
    assert retry[0].ok and not retry[0].replayed, retry
    owners = [inproc.nodes[n] for n in new.table[shard]]
    await inproc.converged(key, 10 + DELTA, owners)


async def test_keyed_ops_go_on_while_a_second_node_joins(inproc: InProcessCluster):
    """From one node to two every shard moves, (n1) -> (n1, n2), and the joiner cannot
    grant until it has caught up. Any grant enough of (n1) meets any enough of (n1, n2), so
    n1's grant suffices: keyed ops must not be refused for the whole hand-off."""
    (first,) = await inproc.start(1, failure_timeout_s=30.0, request_timeout_s=1.0)
    inproc.network.delay(3.0, 3.0, kinds=[wire.PULL])  # a slow hand-off
    await inproc.launch("n2")
    await eventually(lambda: first.cluster.state.pending is not None, "a pending ring", 10.0)
    key = ("t", "ns", "k0")
    assert first.cluster.pending_replicas(first.cluster.shard_of(key)) is not None  # it moves

    op = Op(OpKind.INCREMENT, key, DELTA, idem=IDEM)
    (result,) = await first.coordinator.run([op], "quorum", fingerprint=FINGERPRINT)

    assert result.ok, result
    assert first.cluster.state.pending is not None  # still during the hand-off

"""Hinted `consistency=one` increments (node/coordination/hints.py): a node cut off from
every replica of a counter keeps a plain `one` increment and hands it over once it reaches
them again, where before it refused it (503). Keyed ops still need a majority's grants."""

from __future__ import annotations

import asyncio

from node.base.keys import Key
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually


async def test_a_node_cut_off_from_every_replica_keeps_one_increments_and_hands_them_over(
    inproc: InProcessCluster,
):
    await inproc.start(4, failure_timeout_s=3.0)
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    entry = inproc.nodes["n4"]
    replicas = [inproc.nodes[n] for n in inproc.replicas(key)]
    assert (await entry.coordinator.run([Op(OpKind.INCREMENT, key, 2)], "one"))[0].ok
    await inproc.converged(key, 2, replicas)

    inproc.network.partition([entry.address], [n.address for n in replicas])
    await eventually(
        lambda: not any(entry.parts.pool.reachable(n.address) for n in replicas),
        "n4's links to the replicas dead",
    )
    first, second = await entry.coordinator.run(
        [Op(OpKind.INCREMENT, key, 5), Op(OpKind.INCREMENT, key, -1)], "one"
    )
    assert first.ok and first.hinted and second.ok and second.hinted, (first, second)
    assert first.to_json()["hinted"] is True
    (keyed,) = await entry.coordinator.run(
        [Op(OpKind.INCREMENT, key, 100, idem="k")], "one", fingerprint="f"
    )
    assert keyed.problem is not None and keyed.problem["status"] == 503  # no majority
    (quorum,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 100)], "quorum")
    assert quorum.problem is not None  # only `one` is kept
    assert all(n.value(key) == 2 for n in replicas)

    inproc.network.heal()
    await inproc.converged(key, 6, replicas)  # 2 + 5 - 1, handed over
    await eventually(lambda: entry.value(key) is None, "n4 dropped the handed-over counter")

    # Cut off again: the next hint must not restart n4's slot from zero (the replicas hold
    # its earlier slot; a per-slot max would hide a smaller one).
    inproc.network.partition([entry.address], [n.address for n in replicas])
    await eventually(
        lambda: not any(entry.parts.pool.reachable(n.address) for n in replicas),
        "n4's links dead again",
    )
    (again,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 3)], "one")
    assert again.ok and again.hinted, again
    inproc.network.heal()
    await inproc.converged(key, 9, replicas)


async def test_a_hint_with_sync_durability_is_answered_once_the_durable_replica_holds_it(
    inproc: InProcessCluster,
):
    """`--durability sync` promises every acknowledged write is in the durable replica
    (README: consistency levels), a hint included: a kill -9 right after its 200 must not
    lose it. The flush interval is long, so only the sync wait can have written it."""
    await inproc.start(4, failure_timeout_s=3.0, durability="sync", persist_interval_s=60)
    key, entry, replicas = await _cut_off_n4(inproc)

    (hinted,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "one")

    assert hinted.ok and hinted.hinted, hinted
    held = dict(await entry.durable.load({entry.cluster.shard_of(key)}))
    assert held[key].value() == 5, held
    inproc.network.heal()
    await inproc.converged(key, 5, replicas)


async def test_a_hint_outlives_a_clean_restart_of_its_node(inproc: InProcessCluster):
    """A stop's last flush writes a hint to the node's own durable copy (SQLite), though
    the node does not replicate its shard; the restart must load it and hand it over, not
    leave it forgotten on disk, and forget it there once handed over."""
    await inproc.start(4, failure_timeout_s=3.0)
    key, entry, replicas = await _cut_off_n4(inproc)
    (hinted,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "one")
    assert hinted.ok and hinted.hinted, hinted
    await entry.parts.persister.flush()  # a clean stop's last flush
    await inproc.kill(entry)
    inproc.network.heal()

    entry = await inproc.restart(entry)

    await inproc.converged(key, 5, replicas)
    await eventually(lambda: entry.value(key) is None, "n4 dropped the handed-over hint")
    shard = entry.cluster.shard_of(key)
    async with asyncio.timeout(5):  # and forgot it on disk: a later start loads it no more
        while True:
            if shard not in await entry.durable.stored_shards():
                break
            await asyncio.sleep(0.05)


async def _cut_off_n4(inproc: InProcessCluster) -> tuple[Key, Node, list[Node]]:
    """A counter n4 does not replicate, n4, and its replicas, which n4 no longer reaches."""
    key = inproc.key_where(lambda replicas: "n4" not in replicas)
    entry = inproc.nodes["n4"]
    replicas = [inproc.nodes[n] for n in inproc.replicas(key)]
    inproc.network.partition([entry.address], [n.address for n in replicas])
    await eventually(
        lambda: not any(entry.parts.pool.reachable(n.address) for n in replicas),
        "n4's links to the replicas dead",
    )
    return key, entry, replicas


async def test_a_hint_whose_slot_fills_moves_to_a_fresh_actor_like_any_increment(
    inproc: InProcessCluster,
):
    """A counter whose value stays in int64 accepts every delta, hinted or not (rotation.py):
    when n4's slot of it fills, the hint goes on under a fresh actor rather than a 422."""
    await inproc.start(4, failure_timeout_s=3.0)
    key, entry, replicas = await _cut_off_n4(inproc)
    big = 2**62
    results = []
    for delta in [big, -big, big, -big, big, -big, big]:  # the value is 0 or 2**62 throughout
        (result,) = await entry.coordinator.run([Op(OpKind.INCREMENT, key, delta)], "one")
        results.append(result)

    assert all(r.ok and r.hinted for r in results), [r.to_json() for r in results]
    assert entry.coordinator.rotation.rotations >= 1
    assert entry.value(key) == big
    inproc.network.heal()
    await inproc.converged(key, big, replicas)


async def test_an_op_of_a_hinted_batch_that_fails_leaves_the_answers_of_those_applied(
    inproc: InProcessCluster,
):
    """A client retries exactly the ops answered `may_have_applied: false`. In one hinted
    batch, ka applies and kb, a new counter that needs a fresh actor (the node moved to one
    since the hints last looked), fails because no new incarnation can be stored: ka must
    still answer its value, or a retry would apply it twice."""
    await inproc.start(4, failure_timeout_s=3.0)
    entry = inproc.nodes["n4"]
    ka = inproc.key_where(lambda replicas: "n4" not in replicas)
    kb = next(
        key
        for key in (("t", "ns", f"kb{i}") for i in range(10_000))
        if "n4" not in inproc.replicas(key) and key != ka
    )
    kr = inproc.key_where(lambda replicas: replicas[0] == "n4")  # n4 runs its increments
    inproc.network.isolate(entry.address)
    others = [n for n in inproc.nodes.values() if n is not entry]
    await eventually(lambda: _unreachable(entry, others), "n4 cut off")
    (first,) = await entry.coordinator.run([Op(OpKind.INCREMENT, ka, 1)], "one")
    assert first.ok and first.hinted, first
    big = 2**62
    for delta in [big, -big, big, -big, big, -big, big]:  # fills n4's slot of kr: a new actor
        (result,) = await entry.coordinator.run([Op(OpKind.INCREMENT, kr, delta)], "one")
        assert result.ok and not result.hinted, result
    assert entry.coordinator.rotation.rotations == 1
    incarnation_file = entry.parts.config.data_path / "incarnation"
    incarnation_file.write_text("damaged\n")  # a disk fault: no new incarnation stored

    a, b = await entry.coordinator.run(
        [Op(OpKind.INCREMENT, ka, 10), Op(OpKind.INCREMENT, kb, 20)], "one"
    )

    assert a.ok and a.hinted and a.value == 11, a
    assert b.problem is not None and b.problem["may_have_applied"] is False, b
    assert entry.value(ka) == 11 and entry.value(kb) is None


async def test_a_cut_off_node_does_not_create_counters_past_the_tenants_quota(
    inproc: InProcessCluster,
):
    """The per-tenant quota holds whichever node takes the increment: a node cut off from
    every replica refuses (403) a hint that would create a counter past it, as it does a
    plain increment, and applies nothing."""
    quota = 4
    n1, n2, n3, n4 = await inproc.start(4, max_counters_per_tenant=quota, failure_timeout_s=3.0)
    for i in range(quota):
        (result,) = await n1.coordinator.run([Op(OpKind.INCREMENT, ("t", "ns", f"c{i}"), 1)], "all")
        assert result.ok, result
    await eventually(lambda: n4.parts.quota.total("t") >= quota, "n4 heard the tenant's count")
    inproc.network.isolate(n4.address)
    others = [n1, n2, n3]
    await eventually(lambda: _unreachable(n4, others), "n4 cut off")
    new = [("t", "ns", f"new{i}") for i in range(20)]
    assert any(n4.cluster.node_id not in inproc.replicas(key) for key in new)  # some hinted

    results = await n4.coordinator.run([Op(OpKind.INCREMENT, key, 1) for key in new], "one")

    assert all(r.problem is not None and r.problem["status"] == 403 for r in results), [
        r.to_json() for r in results
    ]
    assert all(n4.value(key) is None for key in new)


async def test_hints_count_toward_the_quota_they_create_counters_under(
    inproc: InProcessCluster,
):
    """A tenant two counters under its quota: a cut-off node creates two hinted counters
    and refuses the rest. Before, hinted counters lay in shards no node counted (the node
    counts those it coordinates), so it created every one."""
    quota = 4
    n1, n2, n3, n4 = await inproc.start(4, max_counters_per_tenant=quota, failure_timeout_s=3.0)
    for i in range(quota - 2):
        (result,) = await n1.coordinator.run([Op(OpKind.INCREMENT, ("t", "ns", f"c{i}"), 1)], "all")
        assert result.ok, result
    await eventually(lambda: n4.parts.quota.total("t") >= quota - 2, "n4 heard the count")
    inproc.network.isolate(n4.address)
    await eventually(lambda: _unreachable(n4, [n1, n2, n3]), "n4 cut off")
    keys = (("t", "ns", f"new{i}") for i in range(100))
    new = [key for key in keys if n4.cluster.node_id not in inproc.replicas(key)][:12]

    results = await n4.coordinator.run([Op(OpKind.INCREMENT, key, 1) for key in new], "one")

    statuses = [200 if r.ok else (r.problem or {}).get("status") for r in results]
    assert statuses == [200, 200] + [403] * 10, statuses


def _unreachable(node: Node, others: list[Node]) -> bool:
    reachable = node.coordinator.replicator.reachable
    return not any(reachable(other.node_id) for other in others)

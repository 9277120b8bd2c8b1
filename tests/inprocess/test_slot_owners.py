"""Each slot is written to the durable replica by its owner; the others take over when the
owner dies (node/cluster/slot_owners.py). The rule serves a shared copy (Redis: app.py);
here each node's SQLite file stands in for it, so that what each node wrote can be told
apart."""

from __future__ import annotations

import asyncio

from crdt import PNCounter
from node.base.keys import Key
from node.cluster.slot_owners import SlotOwners
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

SHARDS = set(range(16))  # the in-process cluster's shard count
KEYS: list[Key] = [("t", "ns", f"c{i}") for i in range(30)]


async def _durable(node: Node) -> dict[Key, PNCounter]:
    return dict(await node.durable.load(SHARDS))


async def _increment(node: Node, delta: int) -> None:
    results = await node.coordinator.run([Op(OpKind.INCREMENT, k, delta) for k in KEYS], "all")
    assert all(r.ok for r in results), results


async def _written(node: Node, slots: dict[str, tuple[int, int]], timeout: float = 5.0) -> None:
    """Wait until node's durable replica holds these slots of every key."""
    found: dict[Key, PNCounter] = {}
    async with asyncio.timeout(timeout):
        while True:
            found = await _durable(node)
            if all(k in found and {a: found[k].slot(a) for a in slots} == slots for k in KEYS):
                return
            await asyncio.sleep(0.02)


async def test_slots_are_written_by_their_owner_and_taken_over_when_it_dies(
    inproc: InProcessCluster,
):
    n1, n2, n3 = await inproc.start(3, failure_timeout_s=2.0)
    for node in (n1, n2, n3):  # as with a shared copy
        node.parts.persister.slot_rule = SlotOwners(node.cluster).rule
    await _increment(n1, 2)
    await _increment(n2, 3)
    a1, a2 = n1.cluster.actor, n2.cluster.actor
    await _written(n1, {a1: (2, 0)})
    await _written(n2, {a2: (3, 0)})
    # every replica holds both slots in memory, but each owner alone wrote its own
    assert {s.actors() for s in (await _durable(n1)).values()} == {frozenset({a1})}
    assert {s.actors() for s in (await _durable(n2)).values()} == {frozenset({a2})}
    assert await _durable(n3) == {}

    await _increment(n1, 5)  # held by every replica; n1 dies before it may flush it
    await inproc.kill(n1)
    await eventually(lambda: "n1" in n2.cluster.down and "n1" in n3.cluster.down, "n1 down")
    for node in (n2, n3):  # both take n1's slots over, at their latest values
        await _written(node, {a1: (7, 0)})


async def test_a_sync_reset_is_in_the_durable_replicas_when_it_answers(inproc: InProcessCluster):
    """A reset raises a floor slot per actor (crdt/pncounter.py). With --durability sync its
    200 promises the reset is durable: a whole-cluster kill -9 right after it must not bring
    the cleared increments back. Each floor's owner writes it only at its next flush (60 s
    here), so the reset's coordinator must have written every floor itself."""
    nodes = await inproc.start(3, durability="sync", persist_interval_s=60)
    for delta, node in enumerate(nodes, start=2):  # a slot of every node's actor
        await _increment(node, delta)
    resets = await nodes[1].coordinator.run([Op(OpKind.RESET, k) for k in KEYS], "all")
    assert all(r.ok for r in resets), resets

    on_disk: dict[Key, PNCounter] = {}  # what a restart of every node would load and merge
    for node in nodes:
        for key, state in (await _durable(node)).items():
            on_disk[key] = on_disk[key].merge(state) if key in on_disk else state
    assert {key: on_disk[key].value() for key in KEYS} == dict.fromkeys(KEYS, 0)


async def test_a_leavers_slots_are_on_an_owners_disk_before_it_forgets_its_own(
    inproc: InProcessCluster,
):
    """A leaver's own slots are on its disk alone (the slot-owner rule). Its hand-over
    forgets its SQLite copy once every owner answered the PUSH, so an owner's answer must
    mean the pushed state is on that owner's disk: a whole-cluster kill -9 right after the
    leave must still find a sync-acknowledged increment on some disk. The flush interval is
    long, so only the PUSH's own write can have put it there."""
    n1, n2, n3, n4 = await inproc.start(4, durability="sync", persist_interval_s=60)
    key = inproc.key_where(lambda replicas: "n4" in replicas)  # n4 runs it: its own slot
    (written,) = await n4.coordinator.run([Op(OpKind.INCREMENT, key, 3)], "all")
    assert written.ok, written

    n1.cluster.apply("n4", "leave")
    await eventually(lambda: len(n4.store) == 0, "n4 handed every shard over", 10.0)

    on_disk: PNCounter | None = None
    for node in (n1, n2, n3, n4):
        found = dict(await node.durable.load(SHARDS)).get(key)
        if found is not None:
            on_disk = found if on_disk is None else on_disk.merge(found)
    assert on_disk is not None and on_disk.value() == 3, on_disk

"""A reset never drives a counter below what its increments and decrements could give.

"DELETE resets a counter while concurrent increments stay counted" (README): a reset raises
a floor per actor to the slot it observed. Wherever a floor goes (a replica, a disk), the
slot it covers must go too: a floor without its slot reads the counter negative, in memory
on a replica that missed the slot, and after a whole-cluster restart from disks that hold
the floors (every replica writes them) but not the owners' slots.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crdt import PNCounter
from node.base.errors import CountersError
from node.base.keys import Key
from node.cluster import wire
from node.coordination.ops import Op, OpKind
from node.storage.durable_sqlite import SqliteReplica
from tests.inprocess.cluster import InProcessCluster, Node, eventually

SHARDS = set(range(16))


async def _disk_union(nodes: list[Node], key: Key) -> PNCounter:
    """What a restart of every node would load and merge, for key."""
    merged = PNCounter.empty()
    for node in nodes:
        replica = SqliteReplica(node.parts.config.data_path / "counters.sqlite3")
        try:
            found = dict(await replica.load(SHARDS)).get(key)
        finally:
            await replica.close()
        if found is not None:
            merged = merged.merge(found)
    return merged


def _block_writes(node: Node) -> asyncio.Event:
    """A slow disk on `node`: its durable writes never finish (until the event is set)."""
    release = asyncio.Event()

    async def stuck(*args: Any, **kwargs: Any) -> int:
        await release.wait()
        return 0

    node.durable.write_changes = stuck  # type: ignore[method-assign]
    return release


async def test_sync_reset_floor_durable_without_the_slot_it_covers(inproc: InProcessCluster):
    """Sync mode. n2's increment +10 is replicated to n1 but not yet on n2's disk (slow disk:
    never acknowledged, 'may have applied'). A reset on n1 observes it, writes the floor
    (every replica writes floors) and answers 200. Whole-cluster kill -9: the disks hold the
    floor (n = 10 for n2's actor) but not n2's slot it covers, so the counter comes back at
    -10, a value no order of the +10 and the reset gives (0 either way)."""
    n1, n2, n3 = await inproc.start(3, durability="sync", persist_interval_s=60)
    key: Key = ("t", "ns", "r1")
    _block_writes(n2)
    inc = asyncio.create_task(n2.coordinator.run([Op(OpKind.INCREMENT, key, 10)], "quorum"))
    await eventually(lambda: n1.value(key) == 10, "n1 holds n2's slot")
    (reset,) = await n1.coordinator.run([Op(OpKind.RESET, key)], "quorum")
    assert reset.ok and reset.value == 0, reset
    try:
        await inc  # 504, may have applied: n2's disk never confirmed
    except CountersError:
        pass
    for node in (n1, n2, n3):
        await inproc.kill(node)
    on_disk = await _disk_union([n1, n2, n3], key)
    assert on_disk.value() >= 0, (on_disk.value(), on_disk)


async def test_async_reset_floor_flushed_before_owner_slot(inproc: InProcessCluster):
    """Async mode: n2's acknowledged +10 waits for n2's next flush; a reset on n1 and n1's
    flush come first, then a whole-cluster kill -9. Losing the unflushed +10 is async's
    contract; the restarted cluster reads -10, and every later increment is 10 short."""
    n1, n2, n3 = await inproc.start(3, persist_interval_s=60)
    key: Key = ("t", "ns", "r2")
    (inc,) = await n2.coordinator.run([Op(OpKind.INCREMENT, key, 10)], "all")
    assert inc.ok, inc
    (reset,) = await n1.coordinator.run([Op(OpKind.RESET, key)], "all")
    assert reset.ok and reset.value == 0, reset
    await n1.parts.persister.flush()  # n1's interval came round before n2's
    for node in (n1, n2, n3):
        await inproc.kill(node)
    restarted = [await inproc.restart(node) for node in (n1, n2, n3)]
    await inproc.settled()
    (after,) = await restarted[0].coordinator.run([Op(OpKind.INCREMENT, key, 1)], "all")
    assert after.ok, after
    (read,) = await restarted[2].coordinator.run([Op(OpKind.GET, key)], "all")
    assert read.value in (1, 11), read  # only +1 after the reset; never 1 - 10


async def test_restart_with_owner_still_down_reads_negative(inproc: InProcessCluster):
    """Sync mode, everything acknowledged and flushed. The floor is on n1's disk, n2's slot
    on n2's disk alone (slot owners). Whole cluster restarts, n2 comes back late: a quorum
    read on n1 + n3 answers -10 rather than a stale-but-possible value."""
    n1, n2, n3 = await inproc.start(3, durability="sync", failure_timeout_s=0.6)
    key: Key = ("t", "ns", "r3")
    (inc,) = await n2.coordinator.run([Op(OpKind.INCREMENT, key, 10)], "all")
    assert inc.ok, inc
    (reset,) = await n1.coordinator.run([Op(OpKind.RESET, key)], "all")
    assert reset.ok and reset.value == 0, reset
    for node in (n1, n2, n3):
        await inproc.kill(node)
    m1 = await inproc.restart(n1)
    m3 = await inproc.restart(n3)
    await eventually(
        lambda: m1.cluster.ready and m3.cluster.ready and m1.cluster.serving("n3"),
        "n1 and n3 serve",
        10.0,
        inproc.describe,
    )
    (read,) = await m1.coordinator.run([Op(OpKind.GET, key)], "quorum")
    assert read.ok, read
    assert read.value is not None and read.value >= 0, read


async def test_replica_that_missed_a_slot_reads_negative_after_reset(inproc: InProcessCluster):
    """No crash. n3 missed n2's +10 (lost SLOTS frame). A reset on n1 sends n3 only the floor
    slots, not the slots they cover; until n1 repairs it (here its reply is slow), n3 holds
    the floor alone and a `one` read there answers -10."""
    n1, n2, n3 = await inproc.start(3)
    key: Key = ("t", "ns", "r4")
    inproc.network.drop(1.0, src=n2.address, dst=n3.address, kinds=[wire.SLOTS])
    (inc,) = await n2.coordinator.run([Op(OpKind.INCREMENT, key, 10)], "quorum")
    assert inc.ok, inc
    await eventually(lambda: n1.value(key) == 10, "n1 holds +10")
    assert n3.value(key) is None
    # n3's answers to n1 are slow (a busy link): n1's repair of n3 comes late
    inproc.network.delay(0.25, 0.25, src=n3.address, dst=n1.address)
    (reset,) = await n1.coordinator.run([Op(OpKind.RESET, key)], "one")
    assert reset.ok and reset.value == 0, reset
    await eventually(lambda: n3.value(key) is not None, "n3 got the floor", 1.0)
    (read,) = await n3.coordinator.run([Op(OpKind.GET, key)], "one")
    inproc.network.heal()
    assert read.ok, read
    assert read.value is not None and read.value >= 0, read

"""A whole-cluster restart (SQLite, the embedded default) in which one member comes back late:
the members back first answer reads and resets with every slot the cluster held.

Each node's SQLite copy holds every slot the node holds (app.py: the slot-owner rule,
node/cluster/slot_owners.py, applies to a shared Redis only). With the rule, a slot was on
its owner's disk alone while the owner was alive; after a whole-cluster kill -9 the members
back first loaded only their own disks, said ready (R of N replicas serve), and a quorum
read missed every increment the late member coordinated, acknowledged with
--durability sync, while a reset on them was undone when it came back.
"""

from __future__ import annotations

from node.cluster import readiness
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_ready_nodes_after_a_whole_cluster_restart_see_the_late_members_sync_writes(
    inproc: InProcessCluster,
):
    n1, n2, n3 = await inproc.start(3, durability="sync")
    key = ("t", "ns", "counted-by-n3")
    (written,) = await n3.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "all")
    assert written.ok and written.value == 5, written  # held by all three, durable on n3
    await inproc.converged(key, 5, [n1, n2, n3])
    await eventually(
        lambda: all(n.parts.persister.backlog == 0 for n in (n1, n2, n3)), "all flushed"
    )

    for node in (n1, n2, n3):  # the whole cluster dies (kill -9: no last flush)
        await inproc.kill(node)
    b1 = await inproc.restart(n1)
    b2 = await inproc.restart(n2)  # n3 is slow to come back
    await eventually(
        lambda: not readiness.reasons(b1.cluster) and not readiness.reasons(b2.cluster),
        "n1 and n2 ready",
        timeout=10.0,
    )

    (read,) = await b1.coordinator.run([Op(OpKind.GET, key)], "quorum")
    assert read.ok, read
    # a sync-acknowledged increment, held by W (here all) replicas before the crash
    assert read.value == 5, (read, b1.parts.handoff.missed)


async def test_a_pull_skipped_at_a_whole_cluster_restart_is_remembered(
    inproc: InProcessCluster,
):
    """README: "A pull that skipped a down replica is remembered (`missed_pulls` in
    `/admin/ring`) and made from that replica when it is back". After a whole-cluster
    restart no restarted member's view knows the late one yet, and handoff.py forgets the
    missed pull at once as if that member were removed for good."""
    n1, n2, n3 = await inproc.start(3)
    for node in (n1, n2, n3):
        await inproc.kill(node)
    b1 = await inproc.restart(n1)
    await inproc.restart(n2)
    await eventually(lambda: b1.cluster.recovered, "n1 recovered", timeout=10.0)
    await eventually(lambda: not readiness.reasons(b1.cluster), "n1 ready", timeout=10.0)
    assert "n3" in b1.cluster.state.current.nodes  # still a member of the ring, not removed
    assert "n3" in b1.parts.handoff.missed, b1.parts.handoff.missed


async def test_a_reset_on_ready_nodes_is_not_undone_when_the_late_member_returns(
    inproc: InProcessCluster,
):
    """The same restart: a reset answered 200 by the ready members raises floors only for
    the slots they hold; the late member's slot, which they held before the crash but not
    on their disks, comes back with it and the reset counter jumps to its old value."""
    n1, n2, n3 = await inproc.start(3, durability="sync")
    key = ("t", "ns", "reset-while-n3-late")
    (written,) = await n3.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "all")
    assert written.ok, written
    await inproc.converged(key, 5, [n1, n2, n3])
    await eventually(
        lambda: all(n.parts.persister.backlog == 0 for n in (n1, n2, n3)), "all flushed"
    )
    for node in (n1, n2, n3):
        await inproc.kill(node)
    b1 = await inproc.restart(n1)
    b2 = await inproc.restart(n2)
    await eventually(
        lambda: not readiness.reasons(b1.cluster) and not readiness.reasons(b2.cluster),
        "n1 and n2 ready",
        timeout=10.0,
    )
    (reset,) = await b1.coordinator.run([Op(OpKind.RESET, key)], "quorum")
    assert reset.ok and reset.value == 0, reset

    b3 = await inproc.restart(n3)
    await eventually(lambda: not readiness.reasons(b3.cluster), "n3 ready", timeout=10.0)
    await inproc.converged(key, b3.value(key) or 0, [b1, b2, b3])  # anti-entropy settles
    (read,) = await b1.coordinator.run([Op(OpKind.GET, key)], "quorum")
    assert read.ok and read.value == 0, read  # no increment since the acknowledged reset


async def test_an_owner_whose_disk_fails_leaves_its_increments_on_no_disk(
    inproc: InProcessCluster,
):
    """Async mode. n3's own durable replica fails (a full disk, say) while n3 stays alive
    and serving; n1's and n2's stay healthy and flush everything they are given. They
    never write n3's slots (its owner is alive), so after a whole-cluster kill -9 the
    increments n3 coordinated meanwhile, acknowledged at quorum and held by all three, are
    on no disk at all: lost, though the only durable replica that failed was n3's."""
    from node.storage.durable import DurableError

    n1, n2, n3 = await inproc.start(3)

    async def disk_full(*args: object, **kwargs: object) -> int:
        raise DurableError("sqlite write failed: database or disk is full")

    n3.durable.write_changes = disk_full  # type: ignore[method-assign]
    key = ("t", "ns", "while-n3-disk-full")
    (written,) = await n3.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "all")
    assert written.ok, written
    await inproc.converged(key, 5, [n1, n2, n3])
    await eventually(lambda: not n3.parts.persister.healthy, "n3's disk reported failing")
    await eventually(
        lambda: all(n.parts.persister.backlog == 0 for n in (n1, n2)), "n1, n2 flushed"
    )

    for node in (n1, n2, n3):
        await inproc.kill(node)
    restarted = [await inproc.restart(node) for node in (n1, n2, n3)]
    await eventually(
        lambda: all(not readiness.reasons(n.cluster) for n in restarted), "all ready", 10.0
    )
    (read,) = await restarted[0].coordinator.run([Op(OpKind.GET, key)], "quorum")
    assert read.ok and read.value == 5, read

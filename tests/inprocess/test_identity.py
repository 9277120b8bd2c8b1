"""A node back with an empty data dir proves its incarnation new before it takes a write.

Issue 11 in process: the replica holding the node's slot at its highest is cut off when the
node comes back, so the node waits for it, then serves under a fresh actor id, and every
acknowledged increment survives.
"""

from __future__ import annotations

import asyncio
import shutil

from node.cluster import readiness
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

KEY = ("t", "ns", "lost")


async def _increment(node: Node, count: int, consistency: str) -> None:
    """Apply `count` increments, each acknowledged. One refused with nothing applied (a peer
    starved past the 0.6 s failure timeout on a loaded machine) is sent again a moment later."""
    for _ in range(count):
        for _ in range(50):
            (result,) = await node.coordinator.run([Op(OpKind.INCREMENT, KEY, 1)], consistency)
            if result.ok or (result.problem or {}).get("may_have_applied", True):
                break
            await asyncio.sleep(0.1)
        assert result.ok, result.problem


async def test_a_node_back_with_an_empty_data_dir_waits_then_takes_a_new_actor(
    inproc: InProcessCluster,
):
    n1, n2, n3 = await inproc.start(3)
    await _increment(n2, 5, "all")
    inproc.network.isolate(n1.address)
    await eventually(lambda: "n1" in n2.cluster.down, "n2 to see n1 down")
    await _increment(n2, 3, "quorum")  # n2:1 = 8 on n2 and n3 only
    inproc.network.heal()
    inproc.network.isolate(n3.address)
    await inproc.kill(n2)
    shutil.rmtree(n2.parts.config.data_path)
    n2 = await inproc.restart(n2)
    assert n2.cluster.actor == "n2:1"  # all it could know alone

    def waiting_for_n3() -> bool:
        return "waiting to hear from n3," in n2.cluster.identity_reason

    await eventually(waiting_for_n3, "n2 to wait for n3", show=lambda: n2.cluster.identity_reason)
    assert n2.cluster.actor == "n2:2"  # n1 remembered n2:1
    assert n2.cluster.recovered and not n2.cluster.ready and n2.value(KEY) == 5
    inproc.network.heal()
    # Ready as /readyz says it: proven, and a quorum of every shard in its view again.
    await eventually(
        lambda: not readiness.reasons(n2.cluster),
        "n2 ready",
        show=lambda: readiness.reasons(n2.cluster),
    )
    assert n2.cluster.actor == "n2:2"
    await _increment(n2, 2, "quorum")
    await inproc.converged(KEY, 10, [n1, n2, n3])
    state = n2.store.get(KEY)
    assert state is not None and state.p.slots == {"n2:1": 8, "n2:2": 2}

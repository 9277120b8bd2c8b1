"""Where a keyed batch's ops run (idempotency.py: at the batch's home) while nodes disagree
about the home: a node of the earlier version routes every keyed op to its shard's first
serving replica (a rolling upgrade), or one link is cut so two nodes see different homes.
Every op must still apply once, not bounce between nodes until the hop limit refuses it."""

from __future__ import annotations

import types

from node.coordination.coordinator import Coordinator
from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually

FINGERPRINT = "POST /v1/namespaces/ns/batch sha256:abc"


def _old_owners(
    self: Coordinator, ops: list[Op], shards: list[int], *_: object
) -> list[str | None]:
    """The earlier version's Coordinator._owners (0ae9a32), verbatim."""
    return [
        self.cluster.coordinator(shard, self.replicator.reachable) if op.idem else self.owner(shard)
        for op, shard in zip(ops, shards, strict=True)
    ]


async def test_a_keyed_batch_in_a_mixed_version_cluster(inproc: InProcessCluster):
    await inproc.start(3)
    request = "upgrade-1"
    home = inproc.replicas(claim_key("t", request))[0]
    # the home still runs the earlier version; the other two this one
    old = inproc.nodes[home].coordinator
    old._owners = types.MethodType(_old_owners, old)  # type: ignore[method-assign]
    keys = [("t", "ns", f"k{i}") for i in range(12)]
    coordinators = {inproc.replicas(key)[0] for key in keys}
    assert len(coordinators) == 3, coordinators
    for asked in ("n1", "n2", "n3"):
        # a batch key whose home is the node of the earlier version
        idem = next(
            f"{request}-{asked}-{j}"
            for j in range(1000)
            if inproc.replicas(claim_key("t", f"{request}-{asked}-{j}"))[0] == home
        )
        coordinator = inproc.nodes[asked].coordinator
        claim = Op(OpKind.CLAIM, claim_key("t", idem), 0, idem)
        [claimed] = await coordinator.run([claim], "quorum", fingerprint=FINGERPRINT)
        assert claimed.ok, claimed
        ops = [Op(OpKind.INCREMENT, key, 1, f"{idem}#{i}") for i, key in enumerate(keys)]
        results = await coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)
        failed = [
            (inproc.replicas(op.key)[0], r.problem["detail"])  # type: ignore[index]
            for op, r in zip(ops, results, strict=True)
            if not r.ok
        ]
        assert not failed, (asked, home, failed)


async def test_a_keyed_batch_op_under_a_partial_partition(inproc: InProcessCluster):
    """Same version, 4 nodes, N=3. The batch's claim shard is [P, H, ...]; the op's shard is
    [C, H, ...] without P. P and C cannot reach each other (everyone else is fine). Asked at
    C: C's home is H (P down in its view); H's home is P, which does not serve the op's
    shard, so H would send it back to the op's coordinator C, and C to H: the hop limit.
    Forwarded to H, a replica of the op's shard, it runs there."""
    await inproc.start(4)
    nodes = sorted(inproc.nodes)
    found = None
    for j in range(2000):
        idem = f"pp-{j}"
        claim_list = inproc.replicas(claim_key("t", idem))
        p, h = claim_list[0], claim_list[1]
        for i in range(200):
            key = ("t", "ns", f"k{i}")
            op_list = inproc.replicas(key)
            if p not in op_list and h in op_list and op_list[0] != h:
                found = (idem, key, p, h, op_list[0])
                break
        if found:
            break
    assert found, "no such placement"
    idem, key, p, h, c = found
    asked = inproc.nodes[c]
    inproc.network.partition([inproc.address_of(p)], [inproc.address_of(c)])
    await eventually(lambda: p in asked.cluster.down, "C marks P down")
    assert p not in inproc.nodes[h].cluster.down, nodes
    claim = Op(OpKind.CLAIM, claim_key("t", idem), 0, idem)
    [claimed] = await asked.coordinator.run([claim], "quorum", fingerprint=FINGERPRINT)
    assert claimed.ok, claimed
    [result] = await asked.coordinator.run(
        [Op(OpKind.INCREMENT, key, 1, f"{idem}#0")], "quorum", fingerprint=FINGERPRINT
    )
    inproc.network.heal()
    assert result.ok, result

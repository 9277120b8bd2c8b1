"""A keyed batch does its per-replica-set work once per preference list, not once per op:
which replicas are writable, and which peers to ask for the reservations (loadtest/README.md,
keyed figures). Counted, not timed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.coordination.idempotency import claim_key
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node

FINGERPRINT = "POST /v1/namespaces/ns/batch sha256:abc"


def _counting(node: Node, name: str) -> list[int]:
    """Count the calls of node's Replicator.<name> (the real method still runs)."""
    replicator = node.coordinator.replicator
    real: Callable[..., Any] = getattr(replicator, name)
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    setattr(replicator, name, counted)
    return calls


async def test_a_keyed_batch_checks_each_preference_list_once(inproc: InProcessCluster):
    await inproc.start(3)
    coordinator = inproc.nodes["n1"]
    # 60 counters whose shards n1 coordinates: several shards, few preference lists
    keys = [inproc.key_where(lambda replicas: replicas[0] == "n1", f"ns{i}") for i in range(60)]
    preference_lists = {inproc.replicas(key) for key in keys}
    assert len({coordinator.cluster.shard_of(key) for key in keys}) > len(preference_lists)
    writable = _counting(coordinator, "check_writable")
    peers = _counting(coordinator, "read_peers")
    ops = [Op(OpKind.INCREMENT, key, 1, f"work#{i}") for i, key in enumerate(keys)]

    results = await coordinator.coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)

    assert [r.value for r in results] == [1] * len(keys)
    assert writable[0] <= len(preference_lists)
    assert peers[0] <= len(preference_lists)
    for key in keys:
        await inproc.converged(key, 1)


async def test_a_keyed_batch_runs_as_one_group_at_its_home(inproc: InProcessCluster):
    """N equal to the node count: every node serves every shard, so the ops of one keyed
    request run at one node (its claim counter's coordinator), as one group: one set of
    reservation and replication frames, not one per shard coordinator."""
    await inproc.start(3)
    keys = [("t", "ns", f"k{i}") for i in range(40)]
    assert len({inproc.replicas(key)[0] for key in keys}) == 3  # three shard coordinators
    groups: list[tuple[str, int]] = []
    for node_id, node in inproc.nodes.items():
        idempotent = node.coordinator.idempotent
        real = idempotent.run_many

        async def counted(ops: Any, *args: Any, _real: Any = real, _id: str = node_id) -> Any:
            groups.append((_id, len(ops)))
            return await _real(ops, *args)

        idempotent.run_many = counted  # type: ignore[method-assign]
    for asked in ("n1", "n2", "n3"):
        groups.clear()
        request = f"home#{asked}"  # a client's key may hold "#" too
        coordinator = inproc.nodes[asked].coordinator
        claim = Op(OpKind.CLAIM, claim_key("t", request), 0, request)
        [claimed] = await coordinator.run([claim], "quorum", fingerprint=FINGERPRINT)
        ops = [Op(OpKind.INCREMENT, key, 1, f"{request}#{i}") for i, key in enumerate(keys)]
        results = await coordinator.run(ops, "quorum", fingerprint=FINGERPRINT)

        assert claimed.ok and all(r.ok for r in results), results
        # the claim, then every op in one group, on the same node
        assert [size for _, size in groups] == [1, len(keys)], groups
        assert groups[0][0] == groups[1][0], groups
    for key in keys:
        await inproc.converged(key, 3)

"""Handing over the shards a node lost: push their state to the owners, then forget them.

After a ring change a node may hold counters of shards it no longer replicates (a leaver,
a replica that lost a shard to a joiner, a joiner whose pending ring was abandoned). Their
state can be the only copy of a write (a `consistency=one` increment, or one that landed
between a pull and the switch), so it is never just dropped: each such shard's counters,
with their idempotency receipts, are pushed to every replica of the shard in this node's
current ring, and only once every one of them has acknowledged the push is the shard
dropped from memory (CounterStore.drop_shard). A replica that is down or does not answer
keeps the shard here for a later round. Writes for a lost shard are refused meanwhile
(handoff.refuse_unheld), but a hint (node/coordination/hints.py) may still land in it while
the pushes are under way: so the shard is dropped only if every counter and receipt it
holds then is as pushed, else kept for the next round to push again.

The durable replica's copy goes with it when that copy is this node's alone (SQLite):
a start loads the shards such a copy holds besides those the node replicates
(durable.stored_shards), so a hand-over cut short by a stop, or a hint, is handed over
after the restart rather than forgotten on disk, and a shard handed over is not loaded
(and pushed) again. Redis is shared by the cluster: the owners' copies live in the very
same keys, which stay.
"""

from __future__ import annotations

import logging

from node.base.errors import PeerError
from node.cluster import wire
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.storage.durable import DurableError, DurableReplica
from node.storage.store import CounterStore

log = logging.getLogger("counters.handover")
PUSH_ENTRIES = 2000  # counters per push frame


def lost_shards(cluster: Cluster, store: CounterStore, now_ms: int) -> list[int]:
    """Shards this node holds counters (or receipts) of but neither replicates nor receives."""
    return [
        shard
        for shard in range(cluster.config.shards)
        if not cluster.holds(shard) and store.shard_carried(shard, now_ms)
    ]


async def hand_over(
    cluster: Cluster, store: CounterStore, pool: PeerPool, now_ms: int, durable: DurableReplica
) -> int:
    """Push each lost shard to its replicas and drop it once all of them acknowledged, from
    memory and from this node's own durable copy; returns how many shards were dropped."""
    dropped = 0
    timeout = cluster.config.request_timeout_s * 5
    failing: set[str] = set()  # owners that failed a push this round: not asked again
    for shard in lost_shards(cluster, store, now_ms):
        owners = [n for n in cluster.state.current.preference_list(shard) if n != cluster.node_id]
        if not owners or not all(cluster.alive(n) and n not in failing for n in owners):
            continue  # never the only copy: wait until every replica can take it
        entries = store.shard_carried(shard, now_ms)
        try:
            for owner in owners:
                address = cluster.address_of(owner)
                if address is None:
                    raise PeerError(f"no address for {owner}")
                link = pool.link(address)
                for start in range(0, len(entries), PUSH_ENTRIES):
                    frame = entries[start : start + PUSH_ENTRIES]
                    try:
                        await link.call(wire.PUSH, wire.carried_to_wire(frame), timeout)
                    except (PeerError, wire.ProtocolError):
                        failing.add(owner)
                        raise
        except (PeerError, wire.ProtocolError) as error:
            log.warning("handing over shard %d failed (kept, retrying): %s", shard, error)
            continue
        if cluster.holds(shard):
            continue  # a newer ring gave it back meanwhile: keep it
        if not pushed_all(store.shard_carried(shard, now_ms), entries):
            # Written meanwhile (a hint): the owners lack that; the next round
            # pushes the shard again, and drops it once nothing landed during its pushes.
            log.info("shard %d changed while handed over: kept for the next round", shard)
            continue
        count = store.drop_shard(shard)
        dropped += 1
        try:
            await durable.forget_shard(shard)
        except DurableError as error:  # only weight: a later start pushes it once more
            log.warning("forgetting handed-over shard %d on disk failed: %s", shard, error)
        log.info("handed shard %d (%d counters) over to %s, dropped it", shard, count, owners)
    return dropped


def pushed_all(held: list[wire.Carried], pushed: list[wire.Carried]) -> bool:
    """Whether every counter and receipt held now is as it was pushed. States only grow
    here (no reset reaches a shard not held) and receipts are only added or expire, so
    any write since the copy shows as a state or receipt that differs or is new."""
    as_pushed = {key: (state, receipts) for key, state, receipts in pushed}
    for key, state, receipts in held:
        was = as_pushed.get(key)
        if was is None:  # a counter created since
            return False
        if state != was[0] or any(was[1].get(idem) != r for idem, r in receipts.items()):
            return False
    return True

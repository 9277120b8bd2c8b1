"""Which slots this node writes to a shared durable replica (Redis): its own, and those no
one else can. A copy of its own (SQLite) gets every slot the node holds (app.py): there the
rule left a slot on its owner's disk alone, and a whole-cluster restart without that owner
answered reads and resets without its slots.

Every replica of a counter holds every actor's slot, and used to write all of them: three
replicas wrote each changed slot three times (three times to the same hash with a shared
Redis). Now a slot is written by the node whose actor it is (its owner), which applied the
increments and holds the counter while it replicates the shard, and by the other replicas
only when the owner cannot: when it is not alive in this node's view (down, removed, or
never heard of), or its gossip says it cannot reach the durable replica, or does not
replicate the counter's shard in the current ring (the shard moved away, so the owner no
longer holds the slot). Slots whose actor names no node are written by everyone, and so are
floor slots (crdt/pncounter.py) as they change: a reset raises the floor of every actor at
once, so the reset's coordinator must write all of them for a sync reset to be in the
durable replica when it answers (their owners would write theirs only at their next flush,
and a whole-cluster kill -9 before that brought the cleared increments back). Resets are
rare, so the floors' extra writes do not show.

What a whole-cluster kill -9 keeps is unchanged: an increment acknowledged in sync mode was
flushed by its coordinator, the owner of the slot it changed, before the answer; in async
mode every increment older than the owner's last flush is on the owner's disk. What a lost
disk costs changes: the owner's slots are on its disk alone while it is alive, so losing
that disk while every other node also restarts loses them (before, every replica's disk
held them). When the owner goes down or loses the shard, the others take over at their next
flush: the persister marks every slot they are newly responsible for dirty (`rule` returns
a token that changes with the set of live nodes and with the ring), so an
owner killed before its last flush loses nothing the others held, unless they die too
within the failure timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from crdt.pncounter import FLOOR_SUFFIX
from node.cluster.membership import Cluster
from node.storage.incarnation import incarnation_of

Rule = Callable[[int, str], bool]  # (shard, actor) -> this node writes that slot
_UNPARSED = ""
RECOVERING = ("recovering",)


def _every(shard: int, actor: str) -> bool:
    return True


class SlotOwners:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._owners: dict[str, str] = {}  # actor -> its node id ("": none)

    def owner(self, actor: str) -> str:
        """The node whose actor (or floor actor) this is, "" for none: every node writes."""
        found = self._owners.get(actor)
        if found is None:
            parsed = incarnation_of(actor)
            found = self._owners[actor] = _UNPARSED if parsed is None else parsed[0]
        return found

    def rule(self) -> tuple[tuple[object, ...], Rule, Rule | None]:
        """(a token equal to the last one while the rule cannot have changed: the live nodes
        and the ring; the slots this node writes now; those of them that are another
        node's, None while it starts). The rule caches liveness per node: take a fresh one
        for every flush."""
        cluster = self.cluster
        if not cluster.recovered:
            # Starting: peers are not heard yet, so "not alive" says nothing. Write what
            # changes (pulls), take nothing over; the first rule after recovery does.
            return RECOVERING, _every, None
        me, replicas, owner = cluster.node_id, cluster.replicas, self.owner
        # while ours is down too (Redis down for all), taking theirs over would only make
        # every node mark every slot again at each change of anyone's flag
        durable_down = frozenset() if cluster.own_durable_down else cluster.durable_down
        alive: dict[str, bool] = {}

        def foreign(shard: int, actor: str) -> bool:
            node = owner(actor)
            if node == me:
                return False
            if not node:
                return True
            up = alive.get(node)
            if up is None:
                up = alive[node] = cluster.alive(node) and node not in durable_down
            return not up or node not in replicas(shard)

        def writes(shard: int, actor: str) -> bool:
            # every replica writes a floor as it changes, the reset's coordinator included;
            # for a takeover (`foreign`) a floor stays its owner's: a rule change scans no
            # more records than before
            return owner(actor) == me or actor.endswith(FLOOR_SUFFIX) or foreign(shard, actor)

        live = frozenset(n for n in cluster.view.members if cluster.alive(n))
        return (live, cluster.state.current, durable_down), writes, foreign

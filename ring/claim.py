"""Claim and release: the deterministic steps that edit a ring's placement table.

A table lists, for each of Q equal shards, its preference list of nodes (position 0 is the
coordinator). Placement is not a function of the member set: with Q = 256 that cannot both keep
every node within 25% of the others and move only the joining or leaving node's replicas.
Instead each membership change edits the previous table, as Dynamo's "strategy 3" and Riak's
claim do, and every node that applies the same step to the same table gets the same table:

- join: the new node takes replicas one at a time from the most loaded node, at the same
  position in the list, until it holds floor(Q*N/M) of them; so only the new node gains data.
  While M <= N every node holds every shard, and the new node is added to every list.
- leave: each of the leaver's replicas goes to the least loaded remaining node not yet in that
  list; with fewer than N nodes left, the lists just shrink. Only the leaver's data moves.
- then coordinators are evened out by swapping positions inside lists, which moves no data.

Every choice is broken by hash64 of the names involved and then by name, never by set or dict
order, so the result depends only on the previous table and the step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from ring.hashing import hash64

__all__ = ["Table", "join", "leave", "members"]

Table = tuple[tuple[str, ...], ...]
_Lists = list[list[str]]


def members(table: Iterable[Iterable[str]]) -> set[str]:
    """Every node id that appears in the table."""
    return {node for entry in table for node in entry}


def join(table: Table, node: str, replicas: int) -> Table:
    """The table with `node` added; the caller checks that it is new and that it fits."""
    lists = [list(entry) for entry in table]
    count = len(members(lists)) + 1
    if count <= replicas:
        _add_everywhere(lists, node, count)
    else:
        _steal(lists, node, target=len(lists) * replicas // count)
    _balance_coordinators(lists)
    return _freeze(lists)


def leave(table: Table, node: str, replicas: int) -> Table:
    """The table without `node`; the caller checks that it is present."""
    lists = [list(entry) for entry in table]
    remaining = members(lists) - {node}
    if len(remaining) < replicas:
        for entry in lists:
            entry.remove(node)
    else:
        _hand_over(lists, node, sorted(remaining))
    _balance_coordinators(lists)
    return _freeze(lists)


def _rank(*parts: str | int) -> int:
    """A pseudo-random but reproducible order for tie-breaks that should spread load."""
    return hash64("/".join(map(str, parts)).encode("utf-8", "surrogatepass"))


def _freeze(lists: _Lists) -> Table:
    return tuple(tuple(entry) for entry in lists)


def _add_everywhere(lists: _Lists, node: str, count: int) -> None:
    """Add `node` to every list, leading its fair share of them straight away."""
    for entry in lists:
        entry.append(node)
    if count == 1:
        return
    # Taking coordinators from the busiest leader here saves the swap pass a long walk: a
    # growing three-node cluster would otherwise start with one node leading every shard.
    by_leader: dict[str, deque[int]] = {}
    for shard in sorted(range(len(lists)), key=lambda s: (_rank(node, s), s)):
        by_leader.setdefault(lists[shard][0], deque()).append(shard)
    leader_rank = {leader: _rank(node, leader) for leader in by_leader}
    for _ in range(len(lists) // count):
        donor = max(by_leader, key=lambda d: (len(by_leader[d]), leader_rank[d], d))
        entry = lists[by_leader[donor].popleft()]
        entry.remove(node)
        entry.insert(0, node)


class _Donors:
    """The current holders' replicas, each queue in the new node's pseudo-random shard order."""

    def __init__(self, lists: _Lists, node: str) -> None:
        self.load: dict[str, int] = {}
        self.leads: dict[str, int] = {}
        self.leading: dict[str, deque[int]] = {}
        self.following: dict[str, deque[int]] = {}
        for holder in sorted(members(lists)):
            self.load[holder] = self.leads[holder] = 0
            self.leading[holder], self.following[holder] = deque(), deque()
        for shard in sorted(range(len(lists)), key=lambda s: (_rank(node, s), s)):
            for position, holder in enumerate(lists[shard]):
                queues = self.following if position else self.leading
                queues[holder].append(shard)
                self.load[holder] += 1
                if position == 0:
                    self.leads[holder] += 1
        self.rank = {holder: _rank(node, holder) for holder in self.load}

    def by_load(self) -> list[str]:
        """Holders, most loaded first."""
        return sorted(self.load, key=lambda d: (self.load[d], self.rank[d], d), reverse=True)

    def pick(self, donor: str, taken: set[int], prefer_lead: bool) -> int | None:
        """Pop the donor's next shard the new node does not hold yet, if any."""
        lead, follow = self.leading[donor], self.following[donor]
        for queue in (lead, follow) if prefer_lead else (follow, lead):
            # The new node's shards only ever grow, so a skipped shard is never wanted later.
            while queue and queue[0] in taken:
                queue.popleft()
            if queue:
                return queue.popleft()
        return None


def _steal(lists: _Lists, node: str, target: int) -> None:
    """Give `node` `target` replicas, each taken from the most loaded node that can spare one."""
    donors = _Donors(lists, node)
    count = len(donors.load) + 1
    taken: set[int] = set()
    while len(taken) < target:
        for donor in donors.by_load():
            if donors.load[donor] <= 1:
                # Its last replica stays: a node without one would drop out of the table.
                # Only a ring of a few shards gets here; the newcomer just gets fewer.
                return
            # A donor leading more than its share of the new cluster gives a shard it leads,
            # so the new node arrives with coordinators too; otherwise it keeps its leads.
            prefer_lead = donors.leads[donor] * count > len(lists)
            shard = donors.pick(donor, taken, prefer_lead)
            if shard is not None:
                break
        else:
            return
        entry = lists[shard]
        position = entry.index(donor)
        entry[position] = node
        taken.add(shard)
        donors.load[donor] -= 1
        if position == 0:
            donors.leads[donor] -= 1


def _hand_over(lists: _Lists, node: str, remaining: list[str]) -> None:
    """Replace `node` in each list by the least loaded remaining node not in that list."""
    load = dict.fromkeys(remaining, 0)
    for entry in lists:
        for holder in entry:
            if holder != node:
                load[holder] += 1
    for shard, entry in enumerate(lists):
        if node not in entry:
            continue
        candidates = [m for m in remaining if m not in entry]
        least = min(load[m] for m in candidates)
        tied = [m for m in candidates if load[m] == least]
        heir = min(tied, key=lambda m: (_rank(node, shard, m), m))
        entry[entry.index(node)] = heir
        load[heir] += 1


def _balance_coordinators(lists: _Lists) -> None:
    """Even out how many shards each node leads by swapping positions inside lists."""
    leads = dict.fromkeys(sorted(members(lists)), 0)
    for entry in lists:
        if entry:
            leads[entry[0]] += 1
    # Every shift takes one lead from a node with at least two more than the receiver, so the
    # sum of squared leads falls each time and the loop ends.
    while leads and _shift_one_lead(lists, leads):
        pass


def _shift_one_lead(lists: _Lists, leads: dict[str, int]) -> bool:
    high, low = max(leads.values()), min(leads.values())
    if high - low < 2:
        return False
    busiest = {d for d, n in leads.items() if n == high}
    if _shift_along_path(lists, leads, busiest, lambda d: leads[d] <= high - 2):
        return True
    donors = {d for d, n in leads.items() if n >= low + 2}
    return _shift_along_path(lists, leads, donors, lambda d: leads[d] == low)


def _shift_along_path(
    lists: _Lists, leads: dict[str, int], sources: set[str], is_sink: Callable[[str], bool]
) -> bool:
    """Breadth-first search from `sources` to a sink, then shift one lead along the path.

    An edge a -> b is a shard led by a that b also holds; swapping them there moves one lead
    from a to b. Along a path every inner node gains one lead and loses one, so only the
    source and the sink change. A direct swap is often impossible (with N = 2 of 16 nodes two
    nodes share about two shards), which is why the search looks further.
    """
    led: dict[str, list[int]] = {}
    for shard, entry in enumerate(lists):
        if len(entry) > 1:
            led.setdefault(entry[0], []).append(shard)
    parent: dict[str, tuple[str, int]] = {}
    frontier = sorted(sources)
    seen = set(frontier)
    while frontier:
        following: list[str] = []
        for leader in frontier:
            for shard in led.get(leader, ()):
                for holder in lists[shard][1:]:
                    if holder in seen:
                        continue
                    seen.add(holder)
                    parent[holder] = (leader, shard)
                    if is_sink(holder):
                        _swap_path(lists, leads, parent, holder)
                        return True
                    following.append(holder)
        frontier = following
    return False


def _swap_path(
    lists: _Lists, leads: dict[str, int], parent: dict[str, tuple[str, int]], sink: str
) -> None:
    holder = sink
    while holder in parent:
        leader, shard = parent[holder]
        entry = lists[shard]
        position = entry.index(holder)
        entry[0], entry[position] = holder, leader
        holder = leader
    leads[holder] -= 1
    leads[sink] += 1

"""Asking the cluster: one live replica per shard, one request per node, merged exactly.

A shard's candidates are this node first when it is a ready replica (no round trip), then
its live replicas in preference order. Each round asks every node for the shards assigned
to it, all at once (a query waits for the slowest node, not their sum). A shard refused
(not held there, or, for a window, observed only since after the window began or beginning
in a restore's gap, coverage.py) or on a node
that failed moves to its next candidate. When no candidate observed a window whole, the one
that observed it longest answers it, and the result says `complete: false` and since when.

Merging is exact: counts, totals and changes are sums over disjoint shards; a counter lives
in one shard, so the k best of the nodes' k best are the k best.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from node.base.errors import PeerError, QuorumUnavailable
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.cluster.wire import REALTIME, ProtocolError
from node.realtime.buckets import Buckets, parse
from node.realtime.coverage import Observation, better
from node.realtime.query import Answer, By, Kind, Query, answer_from_wire
from node.realtime.service import NOT_HELD, Realtime
from node.realtime.windows import MINUTE_MS


@dataclass
class Result:
    counters: int = 0
    total: int = 0
    change: int = 0
    top: list[tuple[str, int, int | None]] = field(default_factory=list)
    complete: bool = True
    since_ms: int = 0  # when incomplete: the latest observation start among what answered
    seen: int | None = None  # WINDOW: the value the change runs up to (None: not said)


class Fanout:
    def __init__(self, cluster: Cluster, pool: PeerPool, realtime: Realtime) -> None:
        self.cluster = cluster
        self.pool = pool
        self.realtime = realtime
        self.timeout_s = cluster.config.request_timeout_s
        self.rounds = 0  # requests sent to nodes, this one included (metrics)

    def candidates(self, shard: int) -> list[str]:
        cluster, me = self.cluster, self.cluster.node_id
        replicas = cluster.replicas(shard)
        ordered = [me] if me in replicas and cluster.ready else []
        ordered += [n for n in replicas if n != me and cluster.alive(n)]
        return ordered

    def _plan(self, shards: list[int]) -> dict[int, list[str]]:
        """Each shard's candidates: whom to ask first, and then. Per query that is a loop
        over every shard: liveness is read once per node, not once per shard."""
        cluster, me = self.cluster, self.cluster.node_id
        ready = cluster.ready
        alive: dict[str, bool] = {}
        left = {}
        for shard in shards:
            replicas = cluster.replicas(shard)
            ordered = [me] if ready and me in replicas else []
            for node in replicas:
                if node != me:
                    live = alive.get(node)
                    if live is None:
                        live = alive[node] = cluster.alive(node)
                    if live:
                        ordered.append(node)
            left[shard] = ordered
        return left

    async def run(self, query: Query, shards: list[int]) -> Result:
        left = self._plan(shards)
        fallback: dict[int, tuple[int, str]] = {}  # shard -> (since, node) observed longest
        result = Result()
        answers: list[Answer] = []
        strict = query.span_min > 0
        while left:
            plan: dict[tuple[str, bool], list[int]] = {}
            for shard, nodes in list(left.items()):
                if nodes:
                    plan.setdefault((nodes.pop(0), strict), []).append(shard)
                elif shard in fallback:
                    plan.setdefault((fallback.pop(shard)[1], False), []).append(shard)
                else:
                    raise QuorumUnavailable(f"no live replica answers for shard {shard}")
            replies = await asyncio.gather(
                *(self._ask(node, query.to(part, firm)) for (node, firm), part in plan.items())
            )
            for ((node, firm), part), answer in zip(plan.items(), replies, strict=True):
                if answer is None or not set(answer.done) <= set(part):
                    continue  # failed (or answered for others): its shards move on
                answers.append(answer)
                for shard in answer.done:
                    left.pop(shard, None)
                    if not firm and strict:
                        result.complete = False
                        result.since_ms = max(result.since_ms, answer.since_ms)
                for shard, since in answer.refused.items():
                    if since != NOT_HELD and (shard not in fallback or since < fallback[shard][0]):
                        fallback[shard] = (since, node)
        return _merge(query, answers, result)

    async def turn(self) -> None:
        """The real-time loop's turn: indexes catch up with the store, then windows of
        shards observed late catch up with a replica that observed them earlier."""
        await self.realtime.turn()
        await self.catch_up()

    async def catch_up(self) -> None:
        """For each shard due (buckets.py): of the other live replicas whose observation
        answers more windows than ours (coverage.better: it began earlier, or, restored,
        was written through later), the best gives its buckets before our live cut (one
        that observed it since ever, with no gap, ends the search); tried once per
        observation. Not merely the first better one: a replica that itself began late
        would leave this one late for good, and so short of full observers after a join."""
        realtime, me = self.realtime, self.cluster.node_id
        for shard in realtime.catch_up_due(realtime.clock_ms()):
            ours = realtime.observation(shard)
            cut = ours.live_cut()
            query = Query(Kind.BUCKETS, "", "", at_ms=cut * MINUTE_MS, shards=(shard,))
            best: tuple[Observation, Buckets] | None = None
            for node_id in self.candidates(shard):
                if node_id == me:
                    continue
                answer = await self._ask(node_id, query)
                if answer is None or answer.done != [shard] or answer.buckets is None:
                    continue
                theirs = Observation(answer.since_ms, tuple(answer.gaps))
                if not better(theirs, ours if best is None else best[0], cut):
                    continue
                try:
                    best = theirs, parse(answer.buckets, cut)
                except ProtocolError:
                    continue
                if theirs == Observation():
                    break
            if best is not None:
                realtime.adopt(shard, ours, *best)
            realtime.caught_up.add(shard)

    async def _ask(self, node_id: str, query: Query) -> Answer | None:
        """node_id's answer, or None when it cannot be had."""
        self.rounds += 1
        if node_id == self.cluster.node_id:
            await self.realtime.prepare(query)
            return self.realtime.answer(query)
        address = self.cluster.address_of(node_id)
        if address is None:
            return None
        try:
            reply = await self.pool.link(address).call(REALTIME, query.to_wire(), self.timeout_s)
            return answer_from_wire(reply)
        except (PeerError, ProtocolError):  # unreachable, timed out, refused: the next one
            return None


def _merge(query: Query, answers: list[Answer], result: Result) -> Result:
    top: list[tuple[str, int, int | None]] = []
    for answer in answers:
        result.counters += answer.counters
        result.total += answer.total
        result.change += answer.change
        if answer.done:  # WINDOW: one counter, so one answer did it
            result.seen = answer.seen
        top.extend(answer.top)
    if len(answers) > 1:  # one node's top is in order already
        if query.by is By.VALUE:
            top.sort(key=lambda entry: (-entry[1], entry[0]))
        else:
            top.sort(key=lambda entry: (-(entry[2] or 0), entry[0]))
    result.top = top[: query.k]
    return result

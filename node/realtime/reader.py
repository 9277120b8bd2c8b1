"""Reading the change feed of the whole cluster from any node: its own log and its peers'.

Each change is in the log of the node that coordinated its shard, so a reader asks every
live member for the events after its position in that member's log: its own log directly,
the others with one EVENTS message each (kind 14, feed_wire.py) over the existing peer
links, all at once. A member that does not answer is left for the next read; its position
stays, so its events come later or, if it died, the node that took its shards over
republishes their latest values (publisher.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from node.base.errors import PeerError
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.cluster.wire import EVENTS, ProtocolError
from node.realtime import feed_wire
from node.realtime.feed_log import EventLog, Read, Subject
from node.realtime.feed_wire import EventsAsk

READ_LIMIT = 1000  # events per member per read


class FeedReader:
    def __init__(self, cluster: Cluster, pool: PeerPool, log: EventLog, timeout_s: float) -> None:
        self.cluster = cluster
        self.pool = pool
        self.log = log
        self.timeout_s = timeout_s

    def members(self) -> dict[str, str]:
        """node id -> address of every member a read asks (this node included)."""
        cluster = self.cluster
        found = {cluster.node_id: cluster.config.address}
        for member in cluster.peers():
            if cluster.alive(member.node_id):
                found[member.node_id] = member.address
        return found

    async def read(
        self, subject: Subject, prefix: str, position: Mapping[str, int]
    ) -> dict[str, Read]:
        """Per member that answered: its events after `position[member]` (-1: none, only
        where its log is; absent: all it holds)."""
        asks: dict[str, Any] = {}
        for node_id, address in self.members().items():
            after = position.get(node_id, 0)
            ask = EventsAsk(subject[0], subject[1], prefix, after, READ_LIMIT)
            if node_id == self.cluster.node_id:
                asks[node_id] = None
            else:
                asks[node_id] = self._ask(address, ask)
        remote = [n for n, a in asks.items() if a is not None]
        replies = await asyncio.gather(*(asks[n] for n in remote), return_exceptions=True)
        out: dict[str, Read] = {}
        me = self.cluster.node_id
        out[me] = self.log.read(subject, prefix, position.get(me, 0), READ_LIMIT)
        for node_id, reply in zip(remote, replies, strict=True):
            if isinstance(reply, Read):
                out[node_id] = reply
            elif not isinstance(reply, (PeerError, ProtocolError, TimeoutError)):
                assert isinstance(reply, BaseException)
                raise reply
        return out

    async def _ask(self, address: str, ask: EventsAsk) -> Read:
        reply = await self.pool.link(address).call(
            EVENTS, feed_wire.ask_to_wire(ask), self.timeout_s
        )
        return feed_wire.read_from_wire(reply, ask.tenant, ask.namespace)

    def answer(self, body: Any) -> list[Any]:
        """A peer's EVENTS request, answered from this node's log."""
        ask = feed_wire.ask_from_wire(body)
        read = self.log.read((ask.tenant, ask.namespace), ask.prefix, ask.after, ask.limit)
        return feed_wire.read_to_wire(read)

"""The in-memory peer links of tests/inprocess/network.py: what node/cluster/links.py's
PeerPool and its links offer a node, carried over a shared `Network` that may delay, drop,
duplicate, cut or tamper with each message (see network.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from crdt import PNCounter
from crdt import receipts as crdt_receipts
from crdt.codec import pn_to_wire
from crdt.receipts import Receipt
from node.base.config import Config
from node.base.errors import PeerError
from node.base.keys import Key
from node.cluster import wire
from node.cluster.links import ShareOf

if TYPE_CHECKING:
    from tests.inprocess.network import Network


class InMemoryLink:
    """What node/cluster/links.py PeerLink offers, one network request per operation."""

    def __init__(self, pool: InMemoryPool, address: str) -> None:
        self.address = address
        self.frames_sent = 0  # replication frames (SLOTS, REPLICATE, READ) sent
        self._pool = pool
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Future[wire.Stated | None]] = set()
        self._calls: set[asyncio.Future[Any]] = set()  # requests under way by call()
        self._closed_because: str | None = None
        self._timed_out = False  # a request timed out, and none was answered since

    @property
    def connected(self) -> bool:
        return self._pool.network.reachable(self._pool.address, self.address)

    @property
    def dead(self) -> bool:
        """As a real link's heartbeat judges it: the path to the peer is cut one way or the
        other (its pings would go unanswered), noticed once a request timed out; alive again
        as soon as the path heals (a real link redials within a second)."""
        network, me = self._pool.network, self._pool.address
        cut = not (network.reachable(me, self.address) and network.reachable(self.address, me))
        return self._timed_out and cut

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def replicate(
        self,
        key: Key,
        state: PNCounter,
        trace: str | None = None,
        receipts: Mapping[str, Receipt] | None = None,
    ) -> asyncio.Future[wire.Stated | None]:
        def body() -> Any:
            entry = [list(key), pn_to_wire(state), self._pool.share_of(key)]
            if receipts:
                entry.append(crdt_receipts.to_wire(dict(receipts)))
            return [entry]

        return self._state_request(wire.REPLICATE, body)

    def replicate_slot(
        self, key: Key, actor: str, p: int, n: int, trace: str | None = None
    ) -> asyncio.Future[wire.Stated | None]:
        share_of = self._pool.share_of
        return self._state_request(wire.SLOTS, lambda: [actor, [*key, p, n, share_of(key)]])

    def replicate_many(
        self,
        items: list[tuple[Key, PNCounter, Mapping[str, Receipt] | None]],
        trace: str | None = None,
    ) -> asyncio.Future[list[wire.Stated | None]]:
        """PeerLink.replicate_many: one REPLICATE request for all the keys."""
        share_of = self._pool.share_of

        def body() -> Any:
            entries = []
            for key, state, receipts in items:
                entry = [list(key), pn_to_wire(state), share_of(key)]
                if receipts:
                    entry.append(crdt_receipts.to_wire(dict(receipts)))
                entries.append(entry)
            return entries

        return self._state_request(wire.REPLICATE, body, len(items))

    def replicate_slots(
        self,
        actor: str,
        items: list[tuple[Key, int, int]],
        trace: str | None = None,
        keys: list[Key] | None = None,
    ) -> asyncio.Future[list[wire.Stated | None]]:
        """PeerLink.replicate_slots: one SLOTS request for all the keys."""
        share_of = self._pool.share_of

        def body() -> Any:
            flat: list[Any] = []
            for key, p, n in items:
                flat += (*key, p, n, share_of(key))
            return [actor, flat]

        return self._state_request(wire.SLOTS, body, len(items))

    def written(self, reply: asyncio.Future[Any]) -> asyncio.Future[bool]:
        """PeerLink.written: here each write is its own request, on its way at once."""
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        sent.set_result(not reply.done())
        return sent

    def read(self, key: Key, trace: str | None = None) -> asyncio.Future[wire.Stated | None]:
        return self._state_request(wire.READ, lambda: [[list(key), self._pool.share_of(key)]])

    def _state_request(
        self, kind: int, body: Callable[[], Any], keys: int | None = None
    ) -> asyncio.Future[Any]:
        """A one-key replication frame; resolves to the peer's state, or None when equal
        (`keys`: a frame of that many keys, resolving to their list). The body is made when
        it is sent, as the real link computes shares at send time."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

        async def send() -> None:
            await asyncio.sleep(0)  # like the real sender: the next loop turn
            self.frames_sent += 1
            try:
                reply = await self.call(kind, body(), self._pool.config.request_timeout_s)
                states = wire.stated_replies_from_wire(reply, 1 if keys is None else keys)
            except (PeerError, wire.ProtocolError) as error:
                if not future.done():
                    future.set_exception(PeerError(str(error)))
                return
            if not future.done():
                future.set_result(states[0] if keys is None else states)

        self._start(send())
        return future

    async def call(self, kind: int, body: Any, timeout: float, trace: str | None = None) -> Any:
        """One request, one reply; PeerError on failure, timeout, or when the link closes."""
        pool = self._pool
        request = asyncio.ensure_future(
            pool.network.call(pool.address, self.address, kind, body, timeout)
        )
        self._calls.add(request)
        request.add_done_callback(self._calls.discard)
        try:
            reply = await request
        except PeerError as error:
            self._timed_out = self._timed_out or str(error).endswith(": timed out")
            raise
        except asyncio.CancelledError:
            if self._closed_because is None:
                raise  # the caller gave up
            raise PeerError(self._closed_because) from None
        self._timed_out = False
        return reply

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str = "node shutting down") -> None:
        """Fail what is still waiting, as a closed connection does; nothing outlives it."""
        self._closed_because = reason
        work = [*self._tasks, *self._calls]
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        for future in list(self._pending):
            if not future.done():
                future.set_exception(PeerError(reason))


class InMemoryPool:
    """What node/cluster/links.py PeerPool offers, over a Network, for the node at `address`."""

    def __init__(self, network: Network, address: str, config: Config, share_of: ShareOf) -> None:
        self.network = network
        self.address = address
        self.config = config
        self.share_of = share_of
        self._links: dict[str, InMemoryLink] = {}

    def link(self, address: str) -> InMemoryLink:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = InMemoryLink(self, address)
        return link

    def reachable(self, address: str) -> bool:
        link = self._links.get(address)
        return link is None or not link.dead

    def links(self) -> list[InMemoryLink]:
        return list(self._links.values())

    def backlog(self) -> int:
        return sum(link.backlog for link in self._links.values())

    async def keep_only(self, addresses: set[str]) -> list[str]:
        gone = [address for address in self._links if address not in addresses]
        links = [self._links.pop(address) for address in gone]
        await asyncio.gather(*(link.close("peer left the cluster") for link in links))
        return gone

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()

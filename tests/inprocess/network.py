"""An in-memory transport between in-process nodes, the way hashicorp/raft tests use InmemTransport.

One `Network` is shared by every node's `InMemoryPool` (memory_links.py: what
`node.app.assemble` takes as `make_pool`). A request travels from its sender to the peer's
`PeerServer.answer` and the reply travels back, each way a message the network may delay,
drop or cut; a request may also be delivered twice. Bodies and replies go through the real
msgpack encoding (node/cluster/wire.py), so the receiving side validates exactly what a
WebSocket would give it.

Faults, each for messages from `src` to `dst` (None: any node) of the given request kinds
(None: all; a reply counts as its request's kind):
- `delay(low, high)`: each message waits a random time within the bounds;
- `drop(rate)`: a message is lost with that probability;
- `duplicate(rate)`: a request is delivered twice (the second reply is thrown away);
- `partition(a, b, one_way=False)`: every message from side a to side b (and back) is lost;
  `isolate(node)` cuts one node from all others;
- `tamper(kind, rewrite)`: a reply's payload is replaced by `rewrite(payload)`;
- `heal()`: back to a perfect network.
A lost message fails its caller after the request's timeout with PeerError("timed out"), as
a real link does; a request to a node that is not attached (killed, not started) fails at
once ("connection refused"), and one in flight when its peer is killed fails with
"connection lost". Every random choice comes from one seeded `random.Random`.

Not emulated: group commit (each replicate or read is its own frame), the per-link limit on
frames in flight, peer authentication, and a real server's closing the connection on a
malformed inline frame (here the caller gets an error reply instead).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from node.base.config import Config
from node.base.errors import CountersError, PeerError, PeerUnreachable
from node.cluster import wire
from node.cluster.links import ShareOf
from tests.inprocess.memory_links import InMemoryPool

log = logging.getLogger("tests.inprocess.network")
Answer = Callable[[int, Any], Awaitable[Any]]  # PeerServer.answer: (kind, body) -> reply
Rewrite = Callable[[Any], Any]
REPLICATION_KINDS = frozenset({wire.SLOTS, wire.REPLICATE, wire.READ})


@dataclass(frozen=True)
class Fault:
    """A fault on messages from src to dst (None: any) whose request kind is in kinds."""

    src: str | None
    dst: str | None
    kinds: frozenset[int] | None
    rate: float = 1.0
    low: float = 0.0
    high: float = 0.0

    def matches(self, src: str, dst: str, kind: int) -> bool:
        return (
            self.src in (None, src)
            and self.dst in (None, dst)
            and (self.kinds is None or kind in self.kinds)
        )


def _kinds(kinds: Iterable[int] | None) -> frozenset[int] | None:
    return None if kinds is None else frozenset(kinds)


class Network:
    """Every in-memory link's medium; see the module docstring for the faults."""

    def __init__(self, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self._servers: dict[str, Answer] = {}
        self._handling: dict[str, set[asyncio.Task[list[Any]]]] = {}  # per node, requests
        self._cut: set[tuple[str, str]] = set()
        self._delays: list[Fault] = []
        self._drops: list[Fault] = []
        self._duplicates: list[Fault] = []
        self._tampers: list[tuple[Fault, Rewrite]] = []
        self._ids = itertools.count(1)
        self.sent: Counter[int] = Counter()  # requests sent, per kind
        self.dropped: Counter[int] = Counter()  # messages lost to drop(), per kind
        self.duplicated: Counter[int] = Counter()  # requests delivered twice, per kind
        self.in_flight: Counter[tuple[str, str, int]] = Counter()  # (src, dst, kind) -> calls
        self.errors: list[BaseException] = []  # unexpected exceptions a server raised

    # -- nodes ------------------------------------------------------------------------------

    def attach(self, address: str, answer: Answer) -> None:
        """Let requests to `address` reach `answer` (a node's PeerServer.answer)."""
        self._servers[address] = answer
        self._handling.setdefault(address, set())

    async def detach(self, address: str) -> None:
        """The node at `address` is gone: requests to it are refused, the ones it was
        answering are abandoned (their callers see "connection lost")."""
        self._servers.pop(address, None)
        handling = self._handling.pop(address, set())
        for task in handling:
            task.cancel()
        await asyncio.gather(*handling, return_exceptions=True)

    def attached(self) -> list[str]:
        return sorted(self._servers)

    def pool_factory(self, address: str) -> Callable[[Config, ShareOf], InMemoryPool]:
        """What assemble() takes as make_pool for the node at `address`."""

        def make_pool(config: Config, share_of: ShareOf) -> InMemoryPool:
            return InMemoryPool(self, address, config, share_of)

        return make_pool

    # -- faults -----------------------------------------------------------------------------

    def delay(
        self,
        low: float,
        high: float,
        src: str | None = None,
        dst: str | None = None,
        kinds: Iterable[int] | None = None,
    ) -> None:
        self._delays.append(Fault(src, dst, _kinds(kinds), low=low, high=high))

    def drop(
        self,
        rate: float,
        src: str | None = None,
        dst: str | None = None,
        kinds: Iterable[int] | None = None,
    ) -> None:
        self._drops.append(Fault(src, dst, _kinds(kinds), rate))

    def duplicate(
        self,
        rate: float,
        src: str | None = None,
        dst: str | None = None,
        kinds: Iterable[int] | None = None,
    ) -> None:
        self._duplicates.append(Fault(src, dst, _kinds(kinds), rate))

    def partition(
        self, side_a: Collection[str], side_b: Collection[str], one_way: bool = False
    ) -> None:
        """Lose every message from side a to side b; and from b to a unless one_way."""
        for a in side_a:
            for b in side_b:
                self._cut.add((a, b))
                if not one_way:
                    self._cut.add((b, a))

    def isolate(self, address: str) -> None:
        """Cut one node from every other attached node, both ways."""
        self.partition([address], [a for a in self._servers if a != address])

    def tamper(
        self, kind: int, rewrite: Rewrite, src: str | None = None, dst: str | None = None
    ) -> None:
        """Replace the payload of successful replies to `kind` requests from src to dst."""
        self._tampers.append((Fault(src, dst, frozenset({kind})), rewrite))

    def heal(self) -> None:
        """No more partitions, delays, drops, duplicates or tampering."""
        self._cut.clear()
        self._delays.clear()
        self._drops.clear()
        self._duplicates.clear()
        self._tampers.clear()

    def pending(self, kinds: Collection[int] | None = None) -> int:
        """Requests (of these kinds) whose callers still wait, lost ones included."""
        return sum(
            count
            for (_, _, kind), count in self.in_flight.items()
            if kinds is None or kind in kinds
        )

    def reachable(self, src: str, dst: str) -> bool:
        return dst in self._servers and (src, dst) not in self._cut

    # -- requests ---------------------------------------------------------------------------

    async def call(self, src: str, dst: str, kind: int, body: Any, timeout: float) -> Any:
        """One request from src to dst and its reply payload; PeerError as a real link
        would raise it (timed out, refused, connection lost, or the peer's error reply)."""
        self.sent[kind] += 1
        self.in_flight[(src, dst, kind)] += 1
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(src, dst, kind, body)
        except TimeoutError:
            raise PeerError(f"{dst}: timed out") from None
        finally:
            self.in_flight[(src, dst, kind)] -= 1

    async def _exchange(self, src: str, dst: str, kind: int, body: Any) -> Any:
        request = wire.encode(kind, next(self._ids), body)
        await self._travel(src, dst, kind)
        answer = self._servers.get(dst)
        if answer is None:
            raise PeerUnreachable(f"{dst}: unreachable: connection refused")
        copies = 2 if self._hit(self._duplicates, src, dst, kind) else 1
        if copies == 2:
            self.duplicated[kind] += 1
        handlers = [self._serve(dst, answer, request) for _ in range(copies)]
        await asyncio.wait(handlers[:1])
        first = handlers[0]
        if first.cancelled():
            raise PeerError(f"{dst}: connection lost")
        ok, payload = first.result()
        await self._travel(dst, src, kind)
        if not ok:
            raise PeerError(f"{dst}: {payload}")
        for fault, rewrite in self._tampers:
            if fault.matches(src, dst, kind):
                payload = rewrite(payload)
        return payload

    def _serve(self, dst: str, answer: Answer, request: bytes) -> asyncio.Task[list[Any]]:
        task = asyncio.create_task(self._answer(answer, request), name=f"inmem-serve-{dst}")
        handling = self._handling[dst]
        handling.add(task)
        task.add_done_callback(handling.discard)
        return task

    async def _answer(self, answer: Answer, request: bytes) -> list[Any]:
        """The receiving side, as node/http/peer_endpoint.py does it: [ok, payload]."""
        kind, request_id, body = wire.decode(request)
        try:
            reply = wire.encode(wire.REPLY, request_id, [True, await answer(kind, body)])
        except (wire.ProtocolError, CountersError) as error:
            reply = wire.encode(wire.REPLY, request_id, [False, str(error)])
        except Exception as error:
            log.exception("peer request kind %d failed", kind)
            self.errors.append(error)
            reply = wire.encode(wire.REPLY, request_id, [False, repr(error)])
        _, _, result = wire.decode(reply)
        return result  # type: ignore[no-any-return]

    async def _travel(self, src: str, dst: str, kind: int) -> None:
        """One message's trip: delayed, then delivered or lost (never returns if lost)."""
        delay = 0.0
        for fault in self._delays:
            if fault.matches(src, dst, kind):
                delay = max(delay, self.random.uniform(fault.low, fault.high))
        if delay:
            await asyncio.sleep(delay)
        lost = (src, dst) in self._cut
        if not lost and self._hit(self._drops, src, dst, kind):
            self.dropped[kind] += 1
            lost = True
        if lost:
            await asyncio.get_running_loop().create_future()  # the caller's timeout ends it

    def _hit(self, faults: list[Fault], src: str, dst: str, kind: int) -> bool:
        return any(
            fault.matches(src, dst, kind) and self.random.random() < fault.rate for fault in faults
        )

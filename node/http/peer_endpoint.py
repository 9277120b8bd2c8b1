"""The peer endpoint: authenticated WebSocket, one frame in, one reply out.

SLOTS, REPLICATE, READ, RECEIPTS, RESERVE, RESOLVE and EVENTS are answered inline (pure in-memory
work, no awaits), so a frame of many keys costs one loop turn. GOSSIP, PULL, PUSH and FORWARD
may wait on other peers, and REALTIME may first build an index shard by shard: they run as
tasks. A malformed frame closes the connection before it touches any state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from opentelemetry.trace import SpanKind

from crdt import PNCounter
from crdt.codec import pn_to_wire
from node.base.config import Config
from node.base.errors import CountersError
from node.base.keys import Key
from node.cluster import peer_auth, wire
from node.cluster.anti_entropy import absorb_push, pushed_rows
from node.cluster.gossip import Gossip
from node.cluster.handoff import ShardNotHeld, refuse_unheld
from node.cluster.wire import ProtocolError
from node.coordination import listing
from node.coordination.coordinator import Coordinator
from node.coordination.ops import OpResult, forward_from_wire
from node.obs import logs
from node.obs.tracing import OFF, Tracing
from node.realtime.query import query_from_wire
from node.realtime.service import Realtime
from node.storage.store import CounterStore

log = logging.getLogger("counters.peer_server")
EMPTY = PNCounter.empty()
INLINE = frozenset(
    {wire.SLOTS, wire.REPLICATE, wire.READ, wire.RECEIPTS, wire.RESERVE, wire.RESOLVE, wire.EVENTS}
)
KIND_NAMES = {
    wire.REPLY: "reply",
    wire.REPLICATE: "replicate",
    wire.READ: "read",
    wire.GOSSIP: "gossip",
    wire.PUSH: "push",
    wire.PULL: "pull",
    wire.FORWARD: "forward",
    wire.SLOTS: "slots",
    wire.RECEIPT: "receipt",
    wire.RECEIPTS: "receipts",
    wire.RESERVE: "reserve",
    wire.RESOLVE: "resolve",
    wire.REALTIME: "realtime",
    wire.EVENTS: "events",
}


class NotRecovered(CountersError):
    """A read or a fencing request (READ, RECEIPTS, RESERVE, RESOLVE) to a node that has not
    yet recovered its state: refused, nothing done."""

    status = 503
    type = "not-recovered"


class PeerServer:
    def __init__(
        self,
        config: Config,
        guard: peer_auth.ReplayGuard,
        store: CounterStore,
        coordinator: Coordinator,
        gossip: Gossip,
        tracing: Tracing = OFF,
        realtime: Realtime | None = None,
        events: Callable[[Any], list[Any]] | None = None,
    ) -> None:
        self.tracing = tracing
        self.events = events  # the change feed's answer to EVENTS (node/realtime/reader.py)
        self.secret = config.cluster_secret
        self.listen = config.address
        self.guard = guard
        self.store = store
        self.coordinator = coordinator
        self.gossip = gossip
        self.realtime = realtime
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = peer_auth.verify(
            self.secret,
            request.method,
            request.path,
            request.headers,
            time.time(),
            target=self.listen,
            guard=self.guard,
        )
        if peer is None:
            raise web.HTTPUnauthorized(reason="peer endpoint needs the cluster secret")
        seal = peer_auth.server_seal(self.secret, request.headers, self.listen)
        ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME_BYTES, compress=False)
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The peer gave up before we answered its handshake (we were paused, or it was
            # killed): nothing is wrong here. aiohttp quietly drops a response it cannot send.
            log.info("peer %s went away before its link was accepted", peer)
            return web.Response(status=499)
        self._sockets.add(ws)
        try:
            await self._serve(ws, seal, peer)
        except ConnectionError as error:
            # The link's other end went away mid-frame: its heartbeat gave up on us while
            # we were paused, or it was killed. Its requests fail at its end; nothing to do.
            log.info("peer link from %s lost: %s %s", peer, type(error).__name__, error)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, seal: peer_auth.FrameSeal, peer: str) -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                kind, request_id, body, trace = wire.decode_traced(seal.open(message.data))
                if kind in INLINE:
                    frame = self._inline_frame(kind, request_id, body, trace)
                    try:
                        await ws.send_bytes(seal.seal(frame))
                    except ConnectionError:
                        # The peer went away (killed, restarted) with requests in flight:
                        # they time out at its end, and there is no one left to answer.
                        log.info("peer link from %s lost while replying", peer)
                        break
                else:
                    answer = self._answer(ws, seal, kind, request_id, body, trace)
                    task = asyncio.create_task(answer)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except (ProtocolError, peer_auth.FrameRejected) as error:
                log.warning("closing peer link from %s: %s", peer, error)
                await ws.close(code=1002, message=b"protocol error")
                break

    def _inline_frame(self, kind: int, request_id: int, body: Any, trace: str | None) -> bytes:
        """The reply frame to an inline request; ProtocolError for a malformed one."""
        try:
            if trace is None or self.tracing.tracer is None:
                reply = self._inline(kind, body)
            else:
                with self.tracing.span(f"peer {KIND_NAMES[kind]}", trace, SpanKind.SERVER):
                    reply = self._inline(kind, body)
        except (ShardNotHeld, NotRecovered) as error:  # refused, nothing done
            return wire.encode(wire.REPLY, request_id, [False, str(error)])
        try:
            return wire.encode(wire.REPLY, request_id, [True, reply])
        except (OverflowError, TypeError, ValueError) as error:
            # A reply msgpack cannot carry (a number past its range) fails this request at
            # its caller; closing the link would fail every other one, replication's too.
            log.exception("peer request kind %d: reply cannot be encoded", kind)
            return wire.encode(wire.REPLY, request_id, [False, f"reply not encodable: {error}"])

    async def answer(self, kind: int, body: Any) -> Any:
        """The reply to one request, whatever carried it (the WebSocket here, an in-memory
        transport in tests); raises ProtocolError or CountersError for an error reply."""
        if kind in INLINE:
            return self._inline(kind, body)
        return await self._dispatch(kind, body)

    def _inline(self, kind: int, body: Any) -> list[Any]:
        """Merge or read; answer None for a key whose state equals the sender's (same share)."""
        store = self.store
        if kind == wire.SLOTS:
            actor, slots = wire.slots_from_wire(body)  # validate all before merging any
            shards = refuse_unheld(self.gossip.cluster, [key for key, *_ in slots])
            answer: list[Any] = []
            merge_slot = store.merge_slot
            for (key, p, n, share), shard in zip(slots, shards, strict=True):
                if merge_slot(key, actor, p, n, shard) == share:
                    answer.append(None)
                else:
                    answer.append(_stated(store, key, store.get(key) or EMPTY))
            return answer
        if kind == wire.REPLICATE:
            updates = wire.updates_from_wire(body)  # validate all before merging any
            refuse_unheld(self.gossip.cluster, (key for key, *_ in updates))
            reply: list[Any] = []
            for key, state, share, found in updates:
                if found:
                    store.add_receipts(key, found)
                if store.merge_share(key, state) == share:
                    reply.append(None)
                else:
                    reply.append(_stated(store, key, store.get(key) or EMPTY))
            return reply
        if kind == wire.EVENTS:
            if self.events is None:
                raise ProtocolError("this node keeps no change feed")
            return self.events(body)
        if not self.gossip.cluster.recovered:
            # Not yet loaded what it held before (states, receipts, reservations): a read
            # would count toward R without the writes it acknowledged, and "no receipt" or
            # "void" could be false, so a retry would apply an op again. The asker asks
            # another replica.
            raise NotRecovered(f"{self.gossip.cluster.node_id} is recovering; ask again later")
        if kind == wire.RECEIPTS:
            return self._receipts(wire.receipt_reads_from_wire(body))
        if kind == wire.RESERVE:  # reserve or read (node/coordination/fencing.py)
            return self.coordinator.idempotent.fence.answer_reserve(body)
        if kind == wire.RESOLVE:  # receipt or abort, asked of an attempt's holder
            return self.coordinator.idempotent.fence.answer_resolve(body)
        reads = wire.reads_from_wire(body)
        # a former replica (the asker's ring lags) holds no longer what it answers for: its
        # answer must not count toward R (the asker asks another replica)
        refuse_unheld(self.gossip.cluster, (key for key, _ in reads))
        return [
            None if store.share(key) == share else _stated(store, key, store.get(key) or EMPTY)
            for key, share in reads
        ]

    def _receipts(self, reads: list[wire.ReceiptRead]) -> list[Any]:
        # Asked by nodes of an earlier version only (now RESERVE): they read [p, n] states.
        """Per key: its state (None when the sender's share says it is the same) and the
        receipt or None of each idempotency key asked."""
        store, now_ms = self.store, int(time.time() * 1000)
        answer: list[Any] = []
        for key, share, idems in reads:
            state = None if store.share(key) == share else pn_to_wire(store.get(key) or EMPTY)
            found = [store.receipt(key, idem, now_ms) for idem in idems]
            answer.append([state, [None if r is None else r.to_wire() for r in found]])
        return answer

    async def _answer(
        self,
        ws: web.WebSocketResponse,
        seal: peer_auth.FrameSeal,
        kind: int,
        request_id: int,
        body: Any,
        trace: str | None,
    ) -> None:
        try:
            if trace is None:  # gossip and other background work: no trace of its own
                reply: Any = await self._dispatch(kind, body)
            else:
                logs.TRACE_ID.set(logs.trace_id_of(trace))
                with self.tracing.span(f"peer {KIND_NAMES[kind]}", trace, SpanKind.SERVER):
                    reply = await self._dispatch(kind, body)
            frame = wire.encode(wire.REPLY, request_id, [True, reply])
        except (ProtocolError, CountersError) as error:
            frame = wire.encode(wire.REPLY, request_id, [False, str(error)])
        except Exception as error:
            log.exception("peer request kind %d failed", kind)
            frame = wire.encode(wire.REPLY, request_id, [False, repr(error)])
        if not ws.closed:
            try:
                await ws.send_bytes(seal.seal(frame))
            except ConnectionError:
                pass

    async def _dispatch(self, kind: int, body: Any) -> Any:
        if kind == wire.GOSSIP:
            return self.gossip.answer(body)
        if kind == wire.RECEIPT:
            key, idem = wire.receipt_request_from_wire(body)
            receipt = self.store.receipt(key, idem, int(time.time() * 1000))
            state = self.store.get(key) or EMPTY
            return [pn_to_wire(state), None if receipt is None else receipt.to_wire()]
        if kind == wire.PUSH:  # answered once a durable copy of our own holds it too
            entries = wire.carried_from_wire(body)  # validated first
            reply = absorb_push(self.store, entries)
            persister = self.coordinator.replicator.persister
            if not persister.durable.shared:  # Redis holds the pusher's writes already
                await persister.keep(*pushed_rows(self.gossip.cluster.shard_of, entries))
            return reply
        if kind == wire.PULL:  # the source adopts the puller's ring first (the barrier)
            return self.gossip.handoff.answer_pull(body, int(time.time() * 1000))
        if kind == wire.FORWARD:
            return await self._forwarded(body)
        if kind == wire.REALTIME and self.realtime is not None:
            query = query_from_wire(body, self.gossip.cluster.config.shards)
            await self.realtime.prepare(query)
            return self.realtime.answer(query).to_wire()
        raise ProtocolError(f"kind {kind} is not a request")

    async def _forwarded(self, body: Any) -> Any:
        if isinstance(body, dict) and "scan" in body:
            return self._scan(body["scan"])
        ops, consistency, hops, fingerprint = forward_from_wire(body)
        try:
            results = await self.coordinator.run(ops, consistency, hops, fingerprint)
        except CountersError as error:
            results = [OpResult.failed(error) for _ in ops]
        return [result.to_json() for result in results]

    def _scan(self, raw: Any) -> list[list[Any]]:
        """A listing's part (coordination/listing.py): [name, value] rows, and each state
        when asked ([..., shards, True]); refused for a shard this node does not serve."""
        if not isinstance(raw, list) or len(raw) not in (6, 7) or raw[6:] not in ([], [True]):
            raise ProtocolError("bad scan")
        tenant, namespace, prefix, after, limit, shards = raw[:6]
        if not all(isinstance(x, str) for x in (tenant, namespace, prefix, after)):
            raise ProtocolError("bad scan strings")
        if type(limit) is not int or not 0 < limit <= 10_000:
            raise ProtocolError("bad scan limit")
        cluster = self.gossip.cluster
        valid = set(wire.shards_from_wire(shards, cluster.config.shards))
        unserved = sorted(s for s in valid if cluster.node_id not in cluster.replicas(s))
        if unserved or not cluster.ready:
            why = f"shards {unserved[:8]}" if unserved else "any shard while it is not ready"
            raise ShardNotHeld(f"{cluster.node_id} does not serve {why}: its ring differs")
        rows = listing.scan_here(self.store, tenant, namespace, prefix, after, limit, valid)
        if len(raw) == 7:
            return [[name, state.saturated_value()[0], pn_to_wire(state)] for name, state in rows]
        return [[name, state.saturated_value()[0]] for name, state in rows]

    async def close_connections(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"node shutting down")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _stated(store: CounterStore, key: Key, state: PNCounter) -> list[Any]:
    """Our state of a counter in a reply, with its receipts not yet durable here: a slot
    never leaves this node without them (node/coordination/idempotency.py)."""
    unflushed = store.unflushed_receipts(key)
    return wire.stated_to_wire(state, unflushed) if unflushed else pn_to_wire(state)

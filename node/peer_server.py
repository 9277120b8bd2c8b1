"""The peer endpoint: authenticated WebSocket, one frame in, one reply out.

REPLICATE and READ are answered inline (pure in-memory work, no awaits), so a frame of many
keys costs one loop turn. GOSSIP, PULL, PUSH and FORWARD may wait on other peers and run as
tasks. A malformed frame closes the connection before it touches any state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web
from opentelemetry.trace import SpanKind

from crdt import PNCounter
from crdt.codec import pn_to_wire
from node import listing, logs, peer_auth, protocol
from node.config import Config
from node.coordinator import Coordinator, Op
from node.errors import CountersError
from node.gossip import Gossip
from node.protocol import ProtocolError
from node.store import CounterStore
from node.tracing import OFF, Tracing
from node.validation import CONSISTENCY_LEVELS

log = logging.getLogger("counters.peer_server")
EMPTY = PNCounter.empty()
OP_KINDS = frozenset({"increment", "get", "reset", "claim"})
INLINE = frozenset({protocol.SLOTS, protocol.REPLICATE, protocol.READ})
KIND_NAMES = {
    protocol.REPLY: "reply",
    protocol.REPLICATE: "replicate",
    protocol.READ: "read",
    protocol.GOSSIP: "gossip",
    protocol.PUSH: "push",
    protocol.PULL: "pull",
    protocol.FORWARD: "forward",
    protocol.SLOTS: "slots",
    protocol.RECEIPT: "receipt",
}


class PeerServer:
    def __init__(
        self,
        config: Config,
        guard: peer_auth.ReplayGuard,
        store: CounterStore,
        coordinator: Coordinator,
        gossip: Gossip,
        tracing: Tracing = OFF,
    ) -> None:
        self.tracing = tracing
        self.secret = config.cluster_secret
        self.listen = config.address
        self.guard = guard
        self.store = store
        self.coordinator = coordinator
        self.gossip = gossip
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
        ws = web.WebSocketResponse(max_msg_size=protocol.MAX_FRAME_BYTES, compress=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._serve(ws, seal, peer)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, seal: peer_auth.FrameSeal, peer: str) -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                kind, request_id, body, trace = protocol.decode_traced(seal.open(message.data))
                if kind in INLINE:
                    if trace is None or self.tracing.tracer is None:
                        reply = self._inline(kind, body)
                    else:
                        with self.tracing.span(f"peer {KIND_NAMES[kind]}", trace, SpanKind.SERVER):
                            reply = self._inline(kind, body)
                    frame = protocol.encode(protocol.REPLY, request_id, [True, reply])
                    await ws.send_bytes(seal.seal(frame))
                else:
                    answer = self._answer(ws, seal, kind, request_id, body, trace)
                    task = asyncio.create_task(answer)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except (ProtocolError, peer_auth.FrameRejected) as error:
                log.warning("closing peer link from %s: %s", peer, error)
                await ws.close(code=1002, message=b"protocol error")
                break

    def _inline(self, kind: int, body: Any) -> list[Any]:
        """Merge or read; answer None for a key whose state equals the sender's (same share)."""
        store = self.store
        if kind == protocol.SLOTS:
            actor, slots = protocol.slots_from_wire(body)  # validate all before merging any
            answer: list[Any] = []
            for key, p, n, share in slots:
                merged = store.merge(key, PNCounter.from_slot(actor, p, n))
                answer.append(None if store.share(key) == share else pn_to_wire(merged))
            return answer
        if kind == protocol.REPLICATE:
            updates = protocol.updates_from_wire(body)  # validate all before merging any
            reply: list[Any] = []
            for key, state, share, found in updates:
                if found:
                    store.add_receipts(key, found)
                merged = store.merge(key, state)
                reply.append(None if store.share(key) == share else pn_to_wire(merged))
            return reply
        reads = protocol.reads_from_wire(body)
        return [
            None if store.share(key) == share else pn_to_wire(store.get(key) or EMPTY)
            for key, share in reads
        ]

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
            frame = protocol.encode(protocol.REPLY, request_id, [True, reply])
        except (ProtocolError, CountersError) as error:
            frame = protocol.encode(protocol.REPLY, request_id, [False, str(error)])
        except Exception as error:
            log.exception("peer request kind %d failed", kind)
            frame = protocol.encode(protocol.REPLY, request_id, [False, repr(error)])
        if not ws.closed:
            try:
                await ws.send_bytes(seal.seal(frame))
            except ConnectionError:
                pass

    async def _dispatch(self, kind: int, body: Any) -> Any:
        if kind == protocol.GOSSIP:
            return self.gossip.answer(body)
        if kind == protocol.RECEIPT:
            key, idem = protocol.receipt_request_from_wire(body)
            receipt = self.store.receipt(key, idem)
            state = self.store.get(key) or EMPTY
            return [pn_to_wire(state), None if receipt is None else receipt.to_wire()]
        if kind == protocol.PUSH:
            self.store.merge_many(protocol.entries_from_wire(body))
            return None
        if kind == protocol.PULL:
            shards = protocol.shards_from_wire(body, self.gossip.cluster.config.shards)
            return protocol.entries_to_wire(
                entry for shard in shards for entry in self.store.shard_entries(shard)
            )
        if kind == protocol.FORWARD:
            return await self._forwarded(body)
        raise ProtocolError(f"kind {kind} is not a request")

    async def _forwarded(self, body: Any) -> Any:
        if not isinstance(body, dict):
            raise ProtocolError("forward body must be a map")
        if "scan" in body:
            return self._scan(body["scan"])
        consistency, hops, raw_ops = body.get("consistency"), body.get("hops"), body.get("ops")
        if consistency not in CONSISTENCY_LEVELS or type(hops) is not int or hops < 1:
            raise ProtocolError("bad forward header")
        if not isinstance(raw_ops, list):
            raise ProtocolError("ops must be a list")
        ops = []
        for raw in raw_ops:
            if not isinstance(raw, list) or len(raw) != 4 or raw[0] not in OP_KINDS:
                raise ProtocolError("bad forwarded op")
            if type(raw[2]) is not int or type(raw[3]) is not str:
                raise ProtocolError("bad forwarded delta or idempotency key")
            if raw[0] == "claim" and not raw[3]:
                raise ProtocolError("a forwarded claim needs its idempotency key")
            ops.append(Op(raw[0], protocol.key_from_wire(raw[1]), raw[2], raw[3]))
        fingerprint = body.get("fingerprint", "")
        if type(fingerprint) is not str:
            raise ProtocolError("bad fingerprint")
        try:
            return await self.coordinator.run(ops, consistency, hops, fingerprint)
        except CountersError as error:
            return [{"error": error.to_problem()} for _ in ops]

    def _scan(self, raw: Any) -> list[list[Any]]:
        if not isinstance(raw, list) or len(raw) != 6:
            raise ProtocolError("bad scan")
        tenant, namespace, prefix, after, limit, shards = raw
        if not all(isinstance(x, str) for x in (tenant, namespace, prefix, after)):
            raise ProtocolError("bad scan strings")
        if type(limit) is not int or not 0 < limit <= 10_000:
            raise ProtocolError("bad scan limit")
        valid = set(protocol.shards_from_wire(shards, self.gossip.cluster.config.shards))
        rows = listing.local_rows(self.store, tenant, namespace, prefix, after, limit, valid)
        return [[name, value] for name, value in rows]

    async def close_connections(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"node shutting down")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

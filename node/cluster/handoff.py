"""Hand-off and recovery: pulling shard state before this node serves or takes shards.

- Recovery: a node that (re)starts holds nothing in memory, so before it counts toward read
  quorums it pulls every shard it replicates from every other live replica, proves its
  incarnation new (identity.py), then moves itself from joining to up.
- Hand-off: while a pending ring exists, a node that receives shards in it pulls their state
  from the current replicas, then announces the pending checksum it caught up with; the
  claimant switches the ring once every receiving node has.
- The barrier: a PULL carries the puller's ring state and view, and the source adopts them
  before it takes its snapshot (`answer_pull`). Every write the source makes after that
  goes to the receiving node too (Cluster.write_targets), so no write falls between the
  snapshot and the switch, whether or not gossip has told the source yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.errors import CountersError, PeerError
from node.base.keys import Key
from node.cluster import wire
from node.cluster.handover import hand_over
from node.cluster.identity import Identity
from node.cluster.membership import Cluster
from node.cluster.pool import PeerPool
from node.storage.durable import DurableError
from node.storage.store import CounterStore
from node.storage.write_behind import Persister
from ring import MembershipError, RingError, Status, View, plan
from ring.claimant import RingState, handoff_mark

log = logging.getLogger("counters.handoff")
SHARDS_PER_PULL = 8
# What the receipts of one pull reply may take on the wire: half a frame (wire.MAX_FRAME_BYTES),
# the rest left to the states. Beyond it the puller asks for the next page (see pull_page).
PULL_RECEIPT_BYTES = 32 * 1024 * 1024
Cursor = tuple[Key, str]  # the last (counter, idempotency key) of a page of receipts
RECEIPT_OVERHEAD_BYTES = 32  # msgpack framing, time and value of one receipt, at most


# What a refused replica write's error says; a coordinator that sent it to a node receiving
# the shard (which refuses until it hears of the pending ring, before it pulls) knows by it
# that nothing is missing there: the pull will bring the write along.
NOT_HELD = "holds no replica of"


class ShardNotHeld(CountersError):
    """A replica write for shards this node neither holds nor receives: refused whole."""

    status = 409
    type = "shard-not-held"


LOADING = "is loading its durable copy"  # SourceLoading's words, as a puller reads them


class SourceLoading(CountersError):
    """A PULL to a node that has not merged its own durable copy yet: its answer would lack
    the slots only its disk holds (slot_owners.py), so the puller asks again later."""

    status = 503
    type = "source-loading"


def refuse_unheld(cluster: Cluster, keys: Iterable[Key]) -> list[int]:
    """Raise ShardNotHeld, before anything is merged, if a key's shard is not this node's;
    else the keys' shards, in their order (a frame's merges need not hash them again)."""
    holds, shard_of = cluster.holds, cluster.shard_of
    shards = [shard_of(key) for key in keys]
    unheld = sorted(shard for shard in set(shards) if not holds(shard))
    if unheld:
        raise ShardNotHeld(
            f"{cluster.node_id} {NOT_HELD} shards {unheld[:8]} in ring epoch "
            f"{cluster.state.current.epoch} and does not receive them; nothing applied"
        )
    return shards


class Handoff:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        pool: PeerPool,
        persister: Persister,
        identity: Identity,
    ) -> None:
        self.cluster = cluster
        self.identity = identity
        self.store = store
        self.pool = pool
        self.persister = persister
        self._load_failing = False  # so an outage is logged when it starts, not every round
        # its own durable copy merged (at its start): until then it answers no PULL, since a
        # puller would take the short answer for the whole state and become ready on it
        self.loaded = False
        self._loading_since: dict[str, float] = {}  # live sources refusing pulls as loading
        # replica -> shards whose state there was not pulled because it was down: it may
        # hold writes no one else has (consistency=one). Pulled from it once it is back.
        self.missed: dict[str, set[int]] = {}

    def pending_moves(self) -> list[tuple[int, str | None, str]]:
        state = self.cluster.state
        if state.pending is None:
            return []
        mark = handoff_mark(state.pending)
        return [
            (move.shard, move.source, move.target)
            for move in plan(state.current, state.pending)
            if self.cluster.synced.get(move.target) != mark
        ]

    async def step(self) -> None:
        cluster = self.cluster
        current = cluster.state.current
        me = cluster.node_id
        if not cluster.recovered and me in current.nodes and cluster.heard_peer:
            if await self._load(current.shards_of(me)) and await self._pull(current.shards_of(me)):
                cluster.recovered = True
                log.info(
                    "recovered %d counters for %d shards",
                    len(self.store),
                    len(current.shards_of(me)),
                )
                for node_id, shards in sorted(self.missed.items()):
                    log.warning(
                        "recovered without %s, which is down: it may hold writes of %d shards "
                        "(%s) that no other replica has (consistency=one); they are pulled from "
                        "it when it is back",
                        node_id,
                        len(shards),
                        sorted(shards)[:16],
                    )
        elif not self.loaded and me not in current.nodes and cluster.heard_peer:
            # Out of the ring (a leaver restarted before its hand-over got through, a joiner):
            # what its own copy holds of shards it does not replicate, hand_over pushes on.
            if not self.persister.durable.shared:
                await self._load(frozenset())
        if cluster.recovered and not cluster.proven:
            await self.identity.settle()  # before it takes a write: a new actor id
        member = cluster.view.get(me)
        ready_to_serve = cluster.recovered and cluster.proven
        if ready_to_serve and member is not None and member.status == Status.JOINING:
            cluster.apply(me, "ready")
        await self._catch_up_pending()
        await self._catch_up_missed()
        # Shards lost in a ring change go to their owners, then out of memory (handover.py).
        await hand_over(
            cluster, self.store, self.pool, int(time.time() * 1000), self.persister.durable
        )

    async def _catch_up_pending(self) -> None:
        cluster = self.cluster
        current, pending, me = cluster.state.current, cluster.state.pending, cluster.node_id
        if pending is None:
            return
        mark = handoff_mark(pending)
        if cluster.synced.get(me) == mark:
            return
        incoming = {m.shard for m in plan(current, pending) if m.target == me}
        if await self._pull(incoming):
            cluster.mark_synced(mark)
            if me not in current.nodes:
                cluster.recovered = True  # it has the state of every shard it will hold
            log.info("caught up with pending ring %s (%d shards)", mark[:8], len(incoming))

    async def _catch_up_missed(self) -> None:
        """Pull from each replica that was down at a pull, now that it is back, what this
        node still holds of the shards it could not pull from it then."""
        cluster, current = self.cluster, self.cluster.state.current
        for node_id in list(self.missed):
            member = cluster.view.get(node_id)
            # gone for good: nothing to wait for (one in the ring but not heard of since a
            # whole-cluster restart is not gone)
            if member.status == Status.REMOVED if member else node_id not in current.nodes:
                self.missed.pop(node_id)
        for node_id in [n for n in self.missed if cluster.alive(n)]:
            shards = {s for s in self.missed[node_id] if cluster.holds(s)}
            if not shards or await self._pull(shards, only=node_id):
                log.info("caught up with %s, back after missing a pull", node_id)
                self.missed.pop(node_id, None)

    async def _load(self, shards: frozenset[int]) -> bool:
        """Merge the durable replica's copy of these shards, and of those this node's own
        copy holds without replicating them (durable.stored_shards: a hint, a hand-over cut
        short by a stop), which hand_over then pushes to their owners; False if it could
        not answer."""
        try:
            count = await self.persister.load(shards | await self.persister.durable.stored_shards())
        except DurableError as error:
            if not self._load_failing:
                log.warning("cannot recover from the durable replica yet (retrying): %s", error)
            self._load_failing = True
            return False
        self._load_failing = False
        self.loaded = True
        log.info("loaded %d counters from the durable replica", count)
        return True

    async def _pull(self, shards: Iterable[int], only: str | None = None) -> bool:
        """Merge every live replica's state of these shards (or `only` that one's); False if
        one could not answer. A replica that is down is noted in `missed`."""
        cluster = self.cluster
        by_node: dict[str, list[int]] = {}
        for shard in shards:
            for node_id in cluster.state.current.preference_list(shard):
                if node_id == cluster.node_id or only not in (None, node_id):
                    continue
                if cluster.alive(node_id):
                    by_node.setdefault(node_id, []).append(shard)
                else:
                    self.missed.setdefault(node_id, set()).add(shard)
        complete = True
        for node_id, node_shards in by_node.items():
            address = cluster.address_of(node_id)
            if address is None:
                complete = False
                continue
            node_shards.sort()
            # A few shards per call, so no reply outgrows a frame or holds the peer's loop.
            for start in range(0, len(node_shards), SHARDS_PER_PULL):
                try:
                    await self._pull_pages(address, node_shards[start : start + SHARDS_PER_PULL])
                except (PeerError, wire.ProtocolError) as error:
                    if self._still_loading(node_id, str(error)) or only is not None:
                        complete = False  # (a catch-up from `only` waits for it, always)
                    else:  # as if it were down: pulled from once it has loaded
                        self.missed.setdefault(node_id, set()).update(node_shards)
                    break
            else:
                self._loading_since.pop(node_id, None)
        return complete

    def _still_loading(self, node_id: str, error: str) -> bool:
        """Whether a failed pull from a live source is waited for (False: the source is
        taken as down). A source that is loading its copy is waited for as long as a silent
        node takes to be called down (one that cannot load, a bad disk, must not keep every
        other node from recovering); any other failure, always. Logged once per source."""
        if LOADING not in error:
            log.warning("pull from %s failed: %s", node_id, error)
            return True
        now = time.monotonic()
        since = self._loading_since.setdefault(node_id, now)
        if since == now:
            log.warning("pull from %s waits: %s", node_id, error)
        if now - since < 2 * self.cluster.config.failure_timeout_s:
            return True
        log.warning(
            "pulling from %s later: it has been loading its copy since %.0f s", node_id, now - since
        )
        return False

    async def _pull_pages(self, address: str, shards: list[int]) -> None:
        """Merge one source's state of these shards, page by page of receipts: each state
        with its receipts, so a retry on the new replicas replays, and the reservations, so
        it meets an attempt still in flight. Receipts made after the first page reach this
        node as writes do (the barrier), so a page may skip them."""
        after: Cursor | None = None
        while True:
            raw = await self.pool.link(address).call(
                wire.PULL,
                self.pull_request(shards, after),
                self.cluster.config.request_timeout_s * 5,
            )
            # a source before pages answers a list: the whole reply
            entries, more = (raw, None) if isinstance(raw, list) else _page_from_wire(raw)
            held: wire.Held = {}
            self.store.merge_carried(wire.carried_from_wire(entries, held))
            self.store.adopt_reservations(held, int(time.time() * 1000))
            if more is None:
                return
            if after is not None and more <= after:
                raise wire.ProtocolError("a pull page did not move on")
            after = more

    def pull_request(self, shards: list[int], after: Cursor | None = None) -> dict[str, Any]:
        """A PULL: the shards, and what the source must adopt before it answers; `paged`:
        the receipts come in pages, this one after `after` (a source before pages ignores
        it and answers a list, its receipts cut to fit a frame)."""
        cluster = self.cluster
        state, view = cluster.state.to_wire(), cluster.view.to_wire()
        request = {"shards": shards, "ring": state, "view": view, "reservations": True}
        request["paged"] = True
        if after is not None:
            request["after"] = [list(after[0]), after[1]]
        return request

    def answer_pull(self, body: Any, now_ms: int) -> Any:
        """The source's side of a PULL: adopt the puller's ring and view first (a pending
        ring this node had not heard of makes it send its later writes of these shards to
        the puller too), then answer with the state of the shards. Refused until this node
        has loaded its own durable copy (SourceLoading)."""
        cluster = self.cluster
        # a joiner recovers by pulls alone; a shared copy (Redis) the puller loaded itself
        if not (self.loaded or cluster.recovered or self.persister.durable.shared):
            raise SourceLoading(f"{cluster.node_id} {LOADING}; pull again")
        if isinstance(body, list):  # a puller that sends no ring (an older node)
            shards = wire.shards_from_wire(body, cluster.config.shards)
        else:
            if not isinstance(body, dict):
                raise wire.ProtocolError("a pull is {shards, ring, view}")
            try:
                shards = wire.shards_from_wire(body["shards"], cluster.config.shards)
                state = RingState.from_wire(body["ring"])
                view = View.from_wire(body["view"])
            except KeyError as error:
                raise wire.ProtocolError(f"a pull lacks {error}") from None
            except (RingError, MembershipError) as error:
                raise wire.ProtocolError(f"bad pull: {error}") from None
            check_ring_shape(state, cluster)
            cluster.absorb(view, state, {})
        asks = body if isinstance(body, dict) else {}
        if asks.get("paged") is True:
            after = _cursor_from_wire(asks["after"]) if "after" in asks else None
            entries, more = pull_page(self.store, shards, now_ms, after, PULL_RECEIPT_BYTES)
            wants_reservations = after is None  # the first page carries them
        else:  # an older puller: one reply, and reservations only if it asks for them
            entries, more = pull_reply(self.store, shards, now_ms), None
            wants_reservations = asks.get("reservations") is True
        held = self.store.reservations_in(set(shards), now_ms) if wants_reservations else {}
        listed = {key for key, _, _ in entries}
        entries += [(key, PNCounter.empty(), {}) for key in held if key not in listed]
        carried = wire.carried_to_wire(entries, held)
        if asks.get("paged") is not True:
            return carried
        return {"entries": carried, "more": None if more is None else [list(more[0]), more[1]]}


def check_ring_shape(state: RingState, cluster: Cluster) -> None:
    """Refuse a peer's ring whose shard count Q or replica count N differs from ours: the
    two nodes would place keys differently, and merging the rings would mix placements."""
    config = cluster.config
    ring = state.current
    if ring.shards != config.shards:
        raise wire.ProtocolError(f"peer runs {ring.shards} shards, this node {config.shards}")
    if ring.replicas != config.replicas:
        raise wire.ProtocolError(
            f"peer runs {ring.replicas} replicas per shard, this node {config.replicas}"
        )


def pull_reply(
    store: CounterStore, shards: Iterable[int], now_ms: int, budget: int = PULL_RECEIPT_BYTES
) -> list[wire.Carried]:
    """The answer to a PULL: every counter of these shards with its receipts in the window.

    The answer to a puller before pages (pull_page answers the others). A reply must fit in
    a frame, or the pull fails every round and the hand-off never ends. If the receipts
    would take more than `budget` bytes, the newest are kept (a client still retrying is
    most likely retrying a recent request) and the others are left out, as before receipts
    travelled at all: a retry of one of those may apply again."""
    entries = [entry for shard in shards for entry in store.shard_carried(shard, now_ms)]
    sizes = [
        (receipt.at_ms, index, idem, _receipt_bytes(idem, receipt))
        for index, (_, _, found) in enumerate(entries)
        for idem, receipt in found.items()
    ]
    if sum(size for *_, size in sizes) <= budget:
        return entries
    kept: list[dict[str, Receipt]] = [{} for _ in entries]
    room, left_out = budget, 0
    for _, index, idem, size in sorted(sizes, key=lambda item: item[0], reverse=True):
        if size > room:
            left_out += 1
            continue
        room -= size
        kept[index][idem] = entries[index][2][idem]
    log.warning("a pull reply leaves out %d old receipts that do not fit in a frame", left_out)
    return [(key, state, kept[i]) for i, (key, state, _) in enumerate(entries)]


def pull_page(
    store: CounterStore,
    shards: Iterable[int],
    now_ms: int,
    after: Cursor | None = None,
    budget: int = PULL_RECEIPT_BYTES,
) -> tuple[list[wire.Carried], Cursor | None]:
    """A page of a paged PULL's answer: the receipts after `after` in (counter, idempotency
    key) order that fit in `budget` bytes (one at least), with every counter's state on the
    first page (`after` None) and none on the others; and the cursor of the next page, None
    on the last. So however many receipts a shard holds, every one reaches the puller."""
    entries = [entry for shard in shards for entry in store.shard_carried(shard, now_ms)]
    names = sorted(
        (key, idem)
        for key, _, found in entries
        for idem in found
        if after is None or (key, idem) > after
    )
    by_key = {key: found for key, _, found in entries}
    page: dict[Key, dict[str, Receipt]] = {}
    room, more = budget, None
    for key, idem in names:
        receipt = by_key[key][idem]
        size = _receipt_bytes(idem, receipt)
        if size > room and page:
            more = _last(page)
            break
        room -= size
        page.setdefault(key, {})[idem] = receipt
    if after is None:
        return [(key, state, page.get(key, {})) for key, state, _ in entries], more
    return [(key, PNCounter.empty(), found) for key, found in page.items()], more


def _last(page: dict[Key, dict[str, Receipt]]) -> Cursor:
    key = next(reversed(page))
    return key, next(reversed(page[key]))


def _page_from_wire(obj: object) -> tuple[object, Cursor | None]:
    if not isinstance(obj, dict) or "entries" not in obj or "more" not in obj:
        raise wire.ProtocolError("a pull page is {entries, more}")
    more = obj["more"]
    return obj["entries"], None if more is None else _cursor_from_wire(more)


def _cursor_from_wire(obj: object) -> Cursor:
    if not isinstance(obj, list) or len(obj) != 2:
        raise wire.ProtocolError("a pull cursor is [key, idempotency key]")
    return wire.key_from_wire(obj[0]), wire._idem(obj[1])


def _receipt_bytes(idem: str, receipt: Receipt) -> int:
    text = len(idem.encode()) + len(receipt.actor.encode()) + len(receipt.fingerprint.encode())
    return text + RECEIPT_OVERHEAD_BYTES

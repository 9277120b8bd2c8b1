"""Anti-entropy: shard digests in every gossip exchange and, for shards that differ, a
per-counter comparison that ships, both ways, every counter whose state or receipts the
other side lacks.

An exchange that node A starts with node B (gossip.py runs one per peer every round):
1. A's GOSSIP message carries a digest per shard they share (store.digest, over states) and,
   for shards holding idempotency receipts, a receipt digest over a range of settled time
   buckets that A names (node/storage/receipt_digest.py). It also carries the total of its
   shard digests, and B's reply carries B's: while A's total equals the one B last told it,
   A sends no shard digests (nothing differs, or B's own exchange finds what does, since
   B's total moved), only the total; every FULL_EVERY rounds it sends them all the same.
   An idle cluster's exchanges then cost a few integers, not 256 digests each way.
2. B compares them with its own and, for a random sample of at most
   `sync_shards_per_round` differing shards of each kind, answers per-counter fingerprints:
   the state's share of the digest, and the sum of its receipts in the range.
3. A pushes its state of every counter whose share differs from B's, with the counter's
   receipts when B holds no state of it, else with its receipts too recent to be settled
   (a slot never travels without the receipts of the keyed ops it counts), and its
   receipts in the range of every counter whose receipt sum differs. B merges and answers,
   for each counter of which it holds more than A sent, its merged state, which A merges:
   after one exchange both hold the merge of every counter they both hold. Counters only B
   holds travel when B starts its exchange with A in its own round.

Nothing here waits for a counter to stand still, though it may wait a few exchanges. A shard
that changed here lately (a write or a merge within one to two write-behind intervals:
store.changed_lately) differs from its other replicas by the writes in flight, which
replication is delivering anyway; under load every shard does, at every exchange, and
comparing them all shipped every counter in flight (9% of a loaded node's CPU under batches
of uniform keys). So the answering side compares the shards that stand still first (at most
shards_per_round, sampled), and in the room left the shards changed lately whose comparison
with this peer has waited HOT_EVERY exchanges or more, longest-waiting first, at most
max(HOT_PER_EXCHANGE, a 32nd of the shards shared with the peer) of them; one not compared
waits one exchange more. A counter written without pause thus converges within
max(HOT_EVERY + 1, 32) exchanges with each peer once no shard that stands still differs: 5
when few shards are busy, 32 (16 s at the default gossip interval) when all are. Its turn is
spent even if the push that follows is cut short by the exchange's deadline or lost (the
rest waits for the next turn), and anti-entropy's own merges make a shard changed lately
too. The counters in flight when a shard is compared are shipped as well (merge is
idempotent, so only bytes and CPU are lost). Work per exchange is bounded by the shards
compared; frames by PUSH_BATCH counters and PUSH_RECEIPTS receipts. Shards whose digests
match cost one comparison each.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.cluster import wire
from node.cluster.links import PeerLink
from node.cluster.wire import Carried, ProtocolError
from node.storage.receipt_book import DirtyReceipt
from node.storage.store import CounterStore

PUSH_BATCH = 2000  # counters per repair frame
UNBOUNDED = 1 << 62  # a bucket past any receipt
PUSH_RECEIPTS = 20_000  # idempotency receipts per repair frame (about 100 bytes each)
FULL_EVERY = 20  # exchanges with a peer between shard digests sent though the totals agree
HOT_EVERY = 4  # exchanges a peer's comparison of a shard that changed lately here is deferred
HOT_PER_EXCHANGE = 8  # at most so many such shards compared with a peer per exchange
MASK64 = (1 << 64) - 1
EMPTY = PNCounter.empty()
Span = tuple[int, int]  # receipt buckets [lo, hi)


@dataclass(frozen=True)
class Asked:
    """What a GOSSIP message asks to compare: (shard, state digest) pairs, and the receipt
    bucket range it names with its receipt digests (bucket ms, lo, hi, shard -> digest)."""

    states: list[tuple[int, Any]]
    receipts: tuple[int, int, int, dict[int, int]] | None
    total: int | None = None  # the sender's total of its shard digests, if it sent one


class AntiEntropy:
    def __init__(self, store: CounterStore, shards_per_round: int) -> None:
        self.store = store
        self.shards_per_round = shards_per_round
        self.repaired_keys = 0  # counters pushed to peers
        self.divergent_shards = 0  # shared shards whose digests differed, compared or not
        self.totals: dict[str, int] = {}  # peer -> the total of digests it told us last
        self._unsent: dict[str, int] = {}  # peer -> exchanges since we sent it digests
        # peer -> shard -> that peer's exchanges since the shard, changed lately here, was
        # last compared with it (absent: compared at the last exchange where it differed)
        self._deferred: dict[str, dict[int, int]] = {}
        self.deferred_shards = 0  # differing shards whose comparison waited, for metrics

    def forget_all_but(self, peers: Collection[str]) -> None:
        """Drop what is kept per peer (its total, its turn, its deferred shards) for peers
        that are no longer members: asked at every ring change (gossip.py)."""
        for kept in (self.totals, self._unsent, self._deferred):
            for peer in [peer for peer in kept if peer not in peers]:
                del kept[peer]

    def total(self, shards: list[int]) -> int:
        """The sum of these shards' digests: equal totals, all but surely equal digests."""
        return sum(self.store.digests(shards)) & MASK64

    def heard_total(self, peer: str, raw: object) -> None:
        """Note the total a peer's message or reply carried (nothing if it had none)."""
        if type(raw) is int:
            self.totals[peer] = raw
        else:
            self.totals.pop(peer, None)

    # -- the initiator's message ------------------------------------------------------------

    def digests(
        self, shards: list[int], now_ms: int, recovered: bool, peer: str | None = None
    ) -> dict[str, Any]:
        """The message fields for these shared shards: their total and state digests (none
        while the total is what `peer` last told us), and receipt digests (with their
        bucket range) for the shards holding receipts once this node has loaded all it
        holds (`recovered`): receipts still loading would differ everywhere."""
        store = self.store
        total = self.total(shards)
        fields: dict[str, Any] = {"total": total, "digests": []}
        unsent = self._unsent.get(peer, FULL_EVERY) if peer is not None else FULL_EVERY
        if peer is None or self.totals.get(peer) != total or unsent >= FULL_EVERY:
            pairs = zip(shards, store.digests(shards), strict=True)
            fields["digests"] = [[shard, digest] for shard, digest in pairs]
            unsent = 0
        if peer is not None:
            self._unsent[peer] = unsent + 1
        with_receipts = set(store.receipt_shards()).intersection(shards) if recovered else ()
        if with_receipts:
            bucket_ms, lo, hi = store.receipt_range(now_ms)
            sums = [[s, store.receipt_digest(s, lo, hi)] for s in sorted(with_receipts)]
            fields["receipts"] = [bucket_ms, lo, hi, [item for item in sums if item[1]]]
        return fields

    # -- the answering side -----------------------------------------------------------------

    def parse(self, body: Any) -> Asked:
        """The digests a GOSSIP message carries, all validated before anything changes."""
        if not isinstance(body, dict):
            raise ProtocolError("gossip body must be a map")
        digests = body.get("digests")
        if not isinstance(digests, list):
            raise ProtocolError("digests must be a list")
        states: list[tuple[int, Any]] = []
        for item in digests:
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError("a digest is [shard, value]")
            states.append((item[0], item[1]))
        total = body.get("total")
        total = total if type(total) is int else None
        raw = body.get("receipts")
        if raw is None:
            return Asked(states, None, total)
        if not isinstance(raw, list) or len(raw) != 4 or not isinstance(raw[3], list):
            raise ProtocolError("receipts are [bucket ms, lo, hi, [[shard, digest], ...]]")
        bucket_ms, lo, hi, sums = raw
        if not all(type(x) is int for x in (bucket_ms, lo, hi)):
            raise ProtocolError("receipt buckets are integers")
        theirs: dict[int, int] = {}
        for item in sums:
            if not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int:
                raise ProtocolError("a receipt digest is [shard, value]")
            theirs[item[0]] = item[1]
        return Asked(states, (bucket_ms, lo, hi, theirs), total)

    def fingerprints(
        self, asked: Asked, shared: list[int], recovered: bool, peer: str = ""
    ) -> dict[str, Any]:
        """Per-counter fingerprints of the shared shards whose digests differ from asked's
        (those that changed lately here only when their turn with `peer` comes: _due);
        receipts are compared only once this node has loaded all it holds."""
        store = self.store
        mine = set(shared)
        fields: dict[str, Any] = {"shares": []}
        differing = [
            shard
            for shard, theirs in asked.states
            if type(shard) is int and shard in mine and store.digest(shard) != theirs
        ]
        self.divergent_shards += len(differing)
        for shard in self._due(peer, differing, mine):
            flat: list[int] = []
            for _, weight, share in store.shard_shares(shard):
                flat += (weight, share)
            fields["shares"].append([shard, flat])
        if asked.receipts is None or not recovered:
            return fields
        bucket_ms, lo, hi, theirs = asked.receipts
        if not store.receipt_buckets_comparable(bucket_ms, lo, hi, int(time.time() * 1000)):
            return fields  # another window (a configuration change) or a clock far behind
        candidates = mine.intersection(store.receipt_shards()) | mine.intersection(theirs)
        differing = [s for s in candidates if store.receipt_digest(s, lo, hi) != theirs.get(s, 0)]
        self.divergent_shards += len(differing)
        receipt_shares = []
        for shard in sorted(self._sample(differing)):
            flat = []
            for _, weight, total in store.receipt_summaries(shard, lo, hi):
                flat += (weight, total)
            receipt_shares.append([shard, flat])
        if receipt_shares:
            fields["receipt_shares"] = receipt_shares
        return fields

    def _due(self, peer: str, differing: list[int], shared: set[int]) -> list[int]:
        """The differing shards to compare with `peer` now, at most shards_per_round: those
        that stand still here (a random sample when there are more), then, in the room
        left, of those changed lately whose comparison with it was deferred at least
        HOT_EVERY times since the last, the longest-waiting, at most max(HOT_PER_EXCHANGE,
        a 32nd of the `shared` shards). A shard changed lately that is not compared waits
        one exchange more; only one that is compared starts waiting afresh."""
        waits = self._deferred.setdefault(peer, {})
        if len(waits) > len(shared):  # shards no longer shared (a ring change) go
            waits = self._deferred[peer] = {s: n for s, n in waits.items() if s in shared}
        still: list[int] = []
        hot: list[tuple[int, int]] = []  # (exchanges waited, shard) of shards changed lately
        changed_lately = self.store.changed_lately
        for shard in differing:
            if changed_lately(shard):
                hot.append((waits.get(shard, HOT_EVERY), shard))
            else:
                waits.pop(shard, None)
                still.append(shard)
        due = self._sample(still)
        room = min(self.shards_per_round - len(due), max(HOT_PER_EXCHANGE, len(shared) // 32))
        hot.sort(reverse=True)
        for waited, shard in hot:
            if waited >= HOT_EVERY and room > 0:
                room -= 1
                waits[shard] = 0
                due.append(shard)
            else:
                waits[shard] = waited + 1
                self.deferred_shards += 1
        return sorted(due)

    def _sample(self, differing: list[int]) -> list[int]:
        """At most shards_per_round of these, picked at random."""
        random.shuffle(differing)  # not always the same shards first when capped
        return differing[: self.shards_per_round]

    # -- the initiator again: what to push --------------------------------------------------

    def to_push(
        self, reply: dict[str, Any], sent: dict[str, Any], shared: list[int], now_ms: int
    ) -> list[Carried]:
        """Our counters the peer's fingerprints say it lacks something of, or holds
        something we lack: state, and receipts where they differ."""
        store = self.store
        mine = set(shared)
        entries: dict[Key, Carried] = {}
        _, _, settled = store.receipt_range(now_ms)
        for shard, theirs in _fingerprints(reply.get("shares", []), mine):
            for key, weight, share in store.shard_shares(shard):
                other = theirs.get(weight)
                if other != share:
                    state = store.get(key) or EMPTY
                    # A peer without the counter lacks its receipts too (its first write).
                    # Otherwise the receipts too recent for the digests go with the state:
                    # a slot must never arrive without the receipts of the keyed ops in it,
                    # or a retry after this node's death (before its own REPLICATE got
                    # there, before its flush) would find the increment without its
                    # receipt, and apply it again.
                    found = (
                        store.receipts_of(key, now_ms)
                        if other is None
                        else store.receipts_between(key, settled, UNBOUNDED)
                    )
                    # and those not yet durable here, however old (a durable replica
                    # down for minutes keeps them unflushed past the settled buckets)
                    unflushed = store.unflushed_receipts(key)
                    if unflushed:
                        found = {**unflushed, **found}
                    entries[key] = (key, state, found)
        span = _span(sent)
        raw = reply.get("receipt_shares")
        if span is not None and raw is not None:
            for shard, theirs in _fingerprints(raw, mine):
                for key, weight, total in store.receipt_summaries(shard, *span):
                    if theirs.get(weight, 0) != total:
                        found = store.receipts_between(key, *span)
                        _, state, already = entries.get(key, (key, store.get(key) or EMPTY, {}))
                        entries[key] = (key, state, {**found, **already})
        pushes = list(entries.values())
        random.shuffle(pushes)  # a push cut short by the deadline leaves other keys each time
        return pushes

    async def push(self, link: PeerLink, entries: list[Carried], deadline: float) -> None:
        """Send entries, frame by frame until the loop time `deadline` (the rest go at the
        next exchange); merge what the peer answers it holds more of."""
        store = self.store
        loop = asyncio.get_running_loop()
        for frame in push_frames(entries):
            left = deadline - loop.time()
            if left <= 0:
                break
            self.repaired_keys += len(frame)
            reply = await link.call(wire.PUSH, wire.carried_to_wire(frame), left)
            if reply is None:  # the peer holds nothing more (or predates PUSH replies)
                continue
            states = wire.stated_replies_from_wire(reply, len(frame))
            for (key, _, _), stated in zip(frame, states, strict=True):
                if stated is not None:
                    state, found = stated
                    if found:  # first: the slot must not arrive here without them
                        store.add_receipts(key, found)
                    store.merge(key, state)


def absorb_push(store: CounterStore, entries: list[Carried]) -> list[Any] | None:
    """The receiving side of a PUSH: merge each entry with its receipts, and answer our
    merged state where it holds more than the entry (None where it does not), or just
    None when it holds more of none (what older nodes always answered)."""
    reply: list[Any] = []
    more = False
    for key, state, found in entries:
        if found:
            store.add_receipts(key, found)
        merged = store.merge(key, state)
        if merged == state:
            reply.append(None)
        else:  # with the receipts not yet durable here, as every state we send
            reply.append(wire.stated_to_wire(merged, store.unflushed_receipts(key)))
            more = True
    return reply if more else None


def pushed_rows(
    shard_of: Callable[[Key], int], entries: list[Carried]
) -> tuple[list[tuple[Key, int, PNCounter]], list[DirtyReceipt]]:
    """A PUSH's entries as the durable replica takes them (Persister.keep)."""
    states: list[tuple[Key, int, PNCounter]] = []
    receipts: list[DirtyReceipt] = []
    for key, state, found in entries:
        shard = shard_of(key)
        states.append((key, shard, state))
        receipts.extend((key, shard, idem, receipt) for idem, receipt in found.items())
    return states, receipts


def push_frames(
    entries: list[Carried], counters: int = PUSH_BATCH, receipts: int = PUSH_RECEIPTS
) -> Iterator[list[Carried]]:
    """Repair frames of at most `counters` entries and `receipts` receipts each. A counter
    with more receipts than a frame holds goes in several entries, each with its state and
    a share of them; merge makes that harmless."""
    frame: list[Carried] = []
    room = receipts
    for key, state, found in entries:
        held: list[tuple[str, Receipt]] = list(found.items())
        start = 0
        while True:
            if len(frame) >= counters or (room <= 0 and start < len(held)):
                yield frame
                frame, room = [], receipts
            part = held[start : start + room]
            frame.append((key, state, dict(part)))
            room -= len(part)
            start += len(part)
            if start >= len(held):
                break
    if frame:
        yield frame


def _fingerprints(raw: Any, shared: set[int]) -> Iterator[tuple[int, dict[int, int]]]:
    """[shard, [weight, value, ...]] items for shards we share: (shard, weight -> value)."""
    if not isinstance(raw, list):
        raise ProtocolError("fingerprints must be a list")
    for item in raw:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise ProtocolError("fingerprints are [shard, [weight, value, ...]]")
        shard, flat = item
        if type(shard) is not int or shard not in shared or len(flat) % 2:
            continue
        yield shard, dict(zip(flat[::2], flat[1::2], strict=True))


def _span(sent: dict[str, Any]) -> Span | None:
    """The receipt bucket range our message named, if any."""
    raw = sent.get("receipts")
    return None if raw is None else (raw[1], raw[2])

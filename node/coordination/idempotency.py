"""Exactly-once increments: an Idempotency-Key is applied once, whichever node gets the retry.

Every op carrying a key runs on one serving replica of its shard chosen from its name and
the view (the shard's first serving replica; a batch's op, the batch's home when that serves
the shard: coordinator.py), one attempt per key at a time on that node. Before it applies,
it reserves the key at a quorum (fencing.py), in the one round trip that reads receipts:
each asked replica atomically answers the receipt it holds, or another attempt's
reservation, or records this attempt's and grants. With a receipt, the node answers the
first result (or 422 if the request differs); with grants from max(R, majority) replicas
(itself included) and no receipt, it applies the op and replicates the new slot together
with the receipt to a write quorum, in one frame, so a receipt exists wherever the
increment does and outlives the node that wrote it.

Why a key never counts twice. An attempt applies only (a) holding grants from a majority of
the replicas and (b) while its own node still holds its reservation, checked in the loop
turn that applies it. Two attempts cannot both hold (a) at once: the majorities intersect in
a replica that granted one of them and answered the other with the holder. A retry that
meets a holder without a receipt never applies blindly; it asks the holder "receipt or
abort" (RESOLVE), which atomically either answers the receipt (the retry replays it) or
releases its reservation, so (b) fails and the old attempt can never apply afterwards (an
attempt never takes its own node's reservation back once given up: fencing.py, step 3);
only then does the retry take the key over from the grants the old attempt held. A coordinator
paused or cut off after applying thus holds its reservation at a majority: a retry
elsewhere cannot reach it and answers 503 in-doubt with Retry-After (errors.InDoubt: the
earlier attempt may have applied; nothing applied now), never 200 and never a second apply.
Once the holder is back, the next retry gets its receipt and replays it; a holder removed
from the cluster by an operator, or restarted (its process token is new: the attempt's
process is gone), answers "void", and the retry then applies only after every replica of
the shard answered without a receipt (the dead attempt's slot and receipt travel in one
frame, so a replica holding its increment holds its receipt); one missing is in doubt again.
Two sides of a partition: only the side with a majority of the replicas gets grants.
Ring changes: two nodes may hold different rings as current for a while (one not yet told
of a switch), and majorities of the old and the new replicas of a shard need not meet. So
while a node knows of a pending ring that moves the shard, its attempts need grants from
a majority of the shard's pending replicas too (joint majorities, as in Raft's membership
changes): every node whose replicas a switch takes over knows the pending ring first (the
hand-off pulls from every live current replica, which adopts it), so an attempt there
meets, among the pending replicas, any attempt of a node already on the new ring
(tests/inprocess/test_fencing_ring_change.py). When any grants enough of the current
replicas meet any enough of the pending ones (a ring that only grows: 1 -> 2 nodes), the
current replicas fence alone. A joiner grants nothing until it has caught up, so while a
shard moves from a replaced node to a joiner its keyed ops need the replicas the two lists
share, all of them at N=3: one down makes them in doubt until the hand-off ends. Not
covered: a current replica that was down for the whole hand-off and comes back hearing of
neither the pending ring nor the switch fences on the old replicas alone until gossip
reaches it.

Why "void" is sound: a slot never leaves a node without the receipts that could die with it.
"Void" plus "no receipt at any replica" lets the retry apply, so it needs: wherever a slot
counting the dead attempt's op exists, its receipt exists too, or the restarted holder
itself answers the receipt. A node's state of a counter leaves it in more than the write's
REPLICATE entry: in later writes and repairs of the counter (SLOTS carries this node's whole
slot, which counts its earlier keyed ops), and in the replies to READ, SLOTS, REPLICATE,
RESERVE, RESOLVE and PUSH, which the asker merges. So each of them carries the counter's
receipts that are not yet durable on the sender (wire.stated_to_wire: [p, n, receipts];
receipt_book.unflushed: added and not yet in a committed flush), and every receiver adds
a message's receipts before it merges its state. A receipt that is durable on the sender
needs no company: it was flushed in the same atomic write as the slot that counts it (and
no slot of the op existed on disk before), so the sender, killed and restarted, reloads it
before it answers RESERVE or RESOLVE (it refuses both until recovered) and answers RESOLVE
with the receipt, which the retry replays. A receipt the sender got from a peer is
unflushed here too until flushed, so it travels onward the same way. The cost is one dict
lookup per state sent for a counter without unflushed receipts (every plain counter, and a
keyed one between flushes), and the receipts of one write-behind interval otherwise.

Why nothing acknowledged is lost. R + W > N: the reserve round reads R replicas, so it sees
the receipt of any attempt that answered 200, and replays it. A 503 in-doubt applies nothing
and says so; the retry that follows answers what did happen.

Restarts and hand-offs. A replica's grants are written behind to its durable replica like
its receipts (node/storage/write_behind.py; per granting node), deleted when they end (a
receipt, a release), and reloaded at start; a shard's new owner learns them from the PULL
replies of the hand-off and keeps them as its own. A counter's slot and its receipts are
flushed in one atomic write, so a coordinator killed mid-flush never comes back holding the
increment without its receipt (which would make its "void" answer wrong).

Limits. A grant is lost, and a paused attempt and a retry could both hold a majority, only
if the replica that gave it fails within the write-behind interval after granting (or loses
its data dir with SQLite; Redis outlives it) and no replica received the first attempt's
write: the same contract as for data. Reservations cost memory beside the receipts (313
bytes each with the entry marking it for the durable replica, tracemalloc over 100,000 on
CPython 3.11, plus the key string, until a receipt arrives or the window ends) and, while
held, a row in SQLite (about 290 bytes with its two indexes, 38-character keys) or about
380 bytes in Redis (a hash field and a sorted-set entry); most end within a round trip and
are never written: a reservation taken and ended between two flushes costs no write. A
hand-off carries the reservations held when the PULL is answered (none from a node of an
earlier version; anti-entropy pushes carry none); one taken later reaches the new owner
only through its receipt. A holder's "void" after a lost data dir is sound
only if every replica of the shard is asked (so a key whose replicas include one down for
good stays in doubt until an operator removes it). Keyed ops at consistency=one need a
majority too. A node of an earlier version does not know RESERVE (its link closes on it):
upgrade every node before keyed ops resume.

Receipts travel wherever state travels, always beside the slot they answer for: in the
REPLICATE entry of the write, in hand-off pulls (a PULL reply carries each counter's receipts
within the window, and counters that hold only receipts, such as batch claims), and in
anti-entropy pushes (a PUSH entry carries the pushed counter's receipts). So after a join, a
leave or a missed update every replica of a shard converges to the same receipts as to the
same states, and a node that drops a shard drops its receipts with it: a receipt without its
slot would replay an increment the node no longer holds.

A replay reports what actually happened. A receipt records an attempt, not an acknowledged
one: the first attempt may have applied here and reached fewer than W replicas (it answered
504, or 503, saying the increment may have applied). So a replay is itself a write: before it
answers 200 it sends the counter's state (which holds the slot that applied the op, since a
receipt never arrives without it) with the receipt to the shard's other replicas, counted
like a write at the retry's consistency. Its 200 therefore means what a first attempt's 200
means, W replicas hold the increment and its receipt, whichever attempt got them there; if
the quorum is out of reach it answers 504/503 "may have applied" again, which is the truth,
and the next retry replays again. It never applies again: the receipt stays held here. A
request whose fingerprint differs (422) sends nothing. The cost is one write round trip per
replayed counter, paid only by retries.

A batch claims its key on a counter of its own, so a different batch under a used key is
refused before any op applies; each op runs under the key plus its index. The claim leads
the ops: when one node runs them all (N equal to the node count, where the claim's
coordinator is the batch's home), they run there as one group, the claim's name reserved in
the same round as the ops' and its receipt replicated in the same frames, and the claim
gates the ops in the loop turn that applies them: if it fails (a different request's
receipt, a reservation held elsewhere, in doubt), every op answers its failure and none
applies. A claim that applies is recorded before any op of the group, so a RESOLVE from
another request under the key, answered between loop turns, finds its receipt. Otherwise
the claim runs first on its own, and the ops only after it succeeded
(Coordinator._run_claimed). A group is forwarded only to a node whose gossip said it gates
(wire.FEATURES): a node of an earlier version would apply the ops of a failed claim. A home
that holds the claim's receipt of a different request refuses the group before reserving
anything; one that learns it in the reservation round leaves the ops' reservations to lapse
(or to a later attempt's RESOLVE), as any op that fails after reserving does.

Where a keyed op runs is routing, not safety: two attempts of one key on two nodes (views
that disagree, or nodes of different versions during an upgrade, which route differently)
meet at the replicas' reservations like retries on two nodes do, above. The choice only
makes the attempts of a key wait for each other on one node rather than contest. A batch's
home is the coordinator of its claim counter (claim_key of its key "K", which its ops "K#i"
name: request_key); when it serves every shard of the batch (N equal to the node count) the
whole batch runs there as one group, with one forward from the node asked. A single keyed op
runs on its shard's first serving replica. A keyed op that arrives forwarded runs where it
lands when that node is a ready replica of its shard: a sender whose idea of the home differs
(another view, another version) would otherwise have it sent on until the hop limit refused
it, on every retry while the views differ (tests/inprocess/test_keyed_home_routing.py).

The keyed ops of one request run as a group, so a batch of 1,000 costs a few round trips,
not two per op: one RESERVE request per set of read peers for every receipt not held here
(shards with the same read peers share it), then every op applies in order, and each
counter's new slot travels with all its new receipts in one REPLICATE entry through the
group-committed links. Attempts that share an (counter, idempotency key) still run one at a
time: a group takes all its names or none (so two groups never wait on each other), and
waits for a holder to finish before trying again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import cast

from crdt import CounterOverflowError, PNCounter, SlotFullError
from crdt.receipts import Receipt
from node.base.errors import CountersError, IdempotencyKeyReused, InDoubt, Overflow
from node.base.keys import Key
from node.cluster.membership import Cluster
from node.coordination.fencing import Fence
from node.coordination.ops import Op, OpKind, OpResult
from node.coordination.quorum import QuorumWait
from node.coordination.quota import CounterQuota
from node.coordination.replication import Replicator
from node.coordination.rotation import ActorRotation
from node.storage.store import CounterStore

log = logging.getLogger("counters.idempotency")
CLAIMS_NAMESPACE = "#idempotency"  # '#' is not allowed in client names: no client can touch it


def claim_key(tenant: str, idempotency_key: str) -> Key:
    return (tenant, CLAIMS_NAMESPACE, idempotency_key)


def home(
    cluster: Cluster,
    reachable: Callable[[str], bool],
    key: Key,
    idem: str,
    replicas: tuple[str, ...],
    homes: dict[tuple[str, str], str | None],
) -> str:
    """Where a batch's keyed op runs if it can, else "": the coordinator of the batch's claim
    counter, when that serves the op's shard (`replicas`). So a keyed batch runs as one group
    on one node when that node serves all its shards (N equal to the node count), not as one
    group per shard coordinator, each with its own forward, reservations and replication
    frames. `homes` remembers each (tenant, batch key)'s within one routing."""
    batch = request_key(idem)
    if not batch:
        return ""
    request = (key[0], batch)
    if request not in homes:
        homes[request] = cluster.coordinator(cluster.shard_of(claim_key(*request)), reachable)
    at = homes[request]
    return at if at is not None and at in replicas and cluster.serving(at) else ""


def request_key(idem: str) -> str:
    """The Idempotency-Key of the batch an op's key comes from, or "" for any other: a batch
    runs its ops under "K#0", "K#1", ... (node/http/counters.py), so "K#i" gives "K". Only
    routing uses it (coordinator.py: a batch's keyed ops run at one home). A client's key
    holds no "#" (validation.IDEMPOTENCY_KEY), so a single op's key never reads as a batch's
    op, nor takes the receipt of one."""
    head, hashed, index = idem.rpartition("#")
    return head if hashed and index.isdigit() else ""


Name = tuple[Key, str]  # (counter, idempotency key)


class Idempotent:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        replicator: Replicator,
        quota: CounterQuota,
        rotation: ActorRotation,
        fence: Fence | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.replicator = replicator
        self.quota = quota
        self.rotation = rotation  # a fresh actor when this node's slot of a counter fills
        # reserves keys at a quorum before they apply, and answers peers' reservations
        self.fence = fence or Fence(cluster, store, replicator)
        self.hits = 0  # retries answered from a receipt, for metrics
        # (counter, idempotency key) -> the future its holder resolves when it is done
        self._holders: dict[Name, asyncio.Future[None]] = {}

    async def run(self, op: Op, shard: int, consistency: str, fingerprint: str) -> OpResult:
        [result] = await self.run_many([op], [shard], consistency, fingerprint)
        return result

    async def run_many(
        self, ops: Sequence[Op], shards: Sequence[int], consistency: str, fingerprint: str
    ) -> list[OpResult]:
        """One result per keyed op, in order, as if they ran one after another."""
        names = {(op.key, op.idem) for op in ops}
        mine = await self._acquire(names)
        try:
            return await self._run(ops, shards, consistency, fingerprint)
        finally:
            for name in names:
                if self._holders.get(name) is mine:
                    del self._holders[name]
            mine.set_result(None)

    async def _acquire(self, names: set[Name]) -> asyncio.Future[None]:
        """Take every name or none; without awaits in between, so it is atomic."""
        holders = self._holders
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        while True:
            busy = next((holders[name] for name in names if name in holders), None)
            if busy is None:
                for name in names:
                    holders[name] = mine
                return mine
            await asyncio.wait([busy])  # not `await busy`: a cancelled waiter must not cancel it

    async def _run(
        self, ops: Sequence[Op], shards: Sequence[int], consistency: str, fingerprint: str
    ) -> list[OpResult]:
        store = self.store
        now_ms = int(time.time() * 1000)
        claimed = len(ops) > 1 and ops[0].kind is OpKind.CLAIM  # a batch's claim gates it
        if claimed:  # a different request under a used key, known here: refused, nothing sent
            receipt = store.receipt(ops[0].key, ops[0].idem, now_ms)
            if receipt is not None and receipt.fingerprint != fingerprint:
                return [self._replay(receipt, fingerprint)] * len(ops)
        results: list[OpResult | None] = [None] * len(ops)
        unknown = [i for i, op in enumerate(ops) if store.receipt(op.key, op.idem, now_ms) is None]
        if unknown:
            try:
                names = {(ops[i].key, ops[i].idem): shards[i] for i in unknown}
                refused = await self.fence.reserve(names, consistency, now_ms)
            except CountersError as error:
                refused = {(ops[i].key, ops[i].idem): error for i in unknown}
            for index in unknown:
                refusal = refused.get((ops[index].key, ops[index].idem))
                if refusal is not None:
                    results[index] = OpResult.failed(refusal)
        # per counter: its shard, this node's new slot, the receipts that travel with it
        writes: dict[Key, tuple[int, PNCounter, dict[str, Receipt]]] = {}
        replayed: set[Key] = set()  # counters whose whole state goes with a replay's receipt
        applied: list[int] = []  # ops whose answer waits for the write quorum
        # replicas -> why a write there is refused (None: writable): asked once per
        # preference list in this loop turn, not once per op (valid until the next await)
        writable: dict[tuple[str, ...], CountersError | None] = {}
        for index, op in enumerate(ops):
            if index and claimed:
                claim = cast(OpResult, results[0])  # decided at index 0
                if claim.problem is not None:
                    results[index] = claim  # nothing of a batch applies without its claim
                    continue
            if results[index] is not None:
                continue
            receipt = store.receipt(op.key, op.idem, now_ms)
            if receipt is not None:
                replay = results[index] = self._replay(receipt, fingerprint)
                if replay.ok:
                    # a 200 only once W hold it again (the first attempt may not have)
                    entry = writes.setdefault(op.key, (shards[index], PNCounter.empty(), {}))
                    entry[2][op.idem] = receipt
                    replayed.add(op.key)
                    applied.append(index)
                continue
            actor = self.cluster.actor
            try:
                self._check_held(op, now_ms)
                self._check_writable(shards[index], consistency, writable)
                try:
                    value, saturated, delta = self._apply(op, consistency, actor)
                except SlotFullError:  # rare: under a fresh actor (rotation.py)
                    actor, (value, saturated, delta) = await self.rotation.apply_fresh(
                        actor, partial(self._apply_held, op, shards[index], consistency, now_ms)
                    )
                    writable.clear()  # after an await: ask again
            except CountersError as error:
                results[index] = OpResult.failed(error)
                continue
            # the value answered, saturated to int64: what a replay answers too
            receipt = Receipt(now_ms, actor, fingerprint, value)
            store.add_receipt(op.key, op.idem, receipt)
            found = writes.get(op.key)
            if found is None:
                writes[op.key] = (shards[index], delta, {op.idem: receipt})
            else:
                found[2][op.idem] = receipt
                # per-slot maximum: this node's slots only grow, and after a rotation the
                # counter's new slots are under another actor
                writes[op.key] = (found[0], found[1].merge(delta), found[2])
            results[index] = OpResult(value, saturated=saturated)
            applied.append(index)
        for key in replayed:
            shard, _, receipts = writes[key]
            writes[key] = (shard, store.get(key) or PNCounter.empty(), receipts)
        if writes:
            await self._replicate(writes, consistency, applied, results)
        return cast(list[OpResult], results)  # every op got one above

    def _replay(self, receipt: Receipt, fingerprint: str) -> OpResult:
        if receipt.fingerprint != fingerprint:
            return OpResult.failed(
                IdempotencyKeyReused(
                    "this Idempotency-Key was used for a different request; nothing applied",
                    may_have_applied=False,
                )
            )
        self.hits += 1
        return OpResult(receipt.value, replayed=True)

    def _check_held(self, op: Op, now_ms: int) -> None:
        """Refuse an attempt that a retry elsewhere gave up (fencing.py): in the loop turn
        that applies it, so it can never apply after it was given up."""
        if not self.fence.holds(op.key, op.idem, now_ms):
            self.fence.in_doubt += 1
            raise InDoubt(
                "a retry of this Idempotency-Key on another node took it over; nothing "
                "applied by this attempt, the other may have applied: retry later"
            )

    def _apply_held(
        self, op: Op, shard: int, consistency: str, now_ms: int, actor: str
    ) -> tuple[int, bool, PNCounter]:
        """_apply after an await (a rotation): the reservation and the replicas are checked
        again first."""
        self._check_held(op, now_ms)
        self.replicator.check_writable(shard, consistency)
        return self._apply(op, consistency, actor)

    def _check_writable(
        self, shard: int, consistency: str, writable: dict[tuple[str, ...], CountersError | None]
    ) -> None:
        """Replicator.check_writable, remembered per preference list: it depends on the
        replicas only (and on liveness, which changes only across an await)."""
        replicas = self.cluster.replicas(shard)
        if replicas not in writable:
            try:
                self.replicator.check_writable(shard, consistency)
                writable[replicas] = None
            except CountersError as error:
                writable[replicas] = error
        refusal = writable[replicas]
        if refusal is not None:
            raise refusal

    def _apply(self, op: Op, consistency: str, actor: str) -> tuple[int, bool, PNCounter]:
        """Apply op here under actor, its replicas checked writable; (the counter's value
        after it, saturated to int64; whether it was; this node's new slot). SlotFullError:
        nothing applied, rotate."""
        if op.kind is not OpKind.INCREMENT:  # a claim (or a keyed read) records a receipt only
            state = self.store.get(op.key)
            value, saturated = (0, False) if state is None else state.saturated_value()
            return value, saturated, PNCounter.empty()
        self.quota.admit(op.key)
        try:
            state, delta = self.store.increment(op.key, actor, op.delta)
        except SlotFullError:
            raise
        except CounterOverflowError as error:
            raise Overflow(str(error)) from None
        value, saturated = state.saturated_value()
        return value, saturated, delta

    async def _replicate(
        self,
        writes: dict[Key, tuple[int, PNCounter, dict[str, Receipt]]],
        consistency: str,
        applied: list[int],
        results: list[OpResult | None],
    ) -> None:
        """Each counter's new slot and receipts in one entry, so a receipt exists wherever
        the increment does; a quorum failure is the result of every op applied here."""
        wait = QuorumWait("increment")
        deltas = {key: (shard, delta) for key, (shard, delta, _) in writes.items()}
        receipts = {key: found for key, (_, _, found) in writes.items()}
        self.replicator.write_many(wait, deltas, consistency, receipts)
        try:
            await self.replicator.settle(wait, wrote=True)
        except CountersError as error:
            for index in applied:
                results[index] = OpResult.failed(error)

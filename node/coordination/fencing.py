"""Fencing: an Idempotency-Key is reserved at a majority of its replicas before it applies.

The argument is in idempotency.py's docstring; this module is its mechanism. An attempt is
named by its coordinator's node id and process token (random per process: one process runs
the attempts of one key one at a time, so the token names its attempt, and a restarted node
has a new one). Three steps, the first one the only one in the common case:

1. Reserve or read (RESERVE, one request per set of read peers, as RECEIPTS was). Every asked
   replica, this one first, atomically per (counter, key) answers its receipt; or another
   live attempt's reservation; or records ours and grants. An op applies only with grants
   from max(R, majority) replicas including this one, and no receipt anywhere asked; while
   a pending ring moves the shard, also from a majority of its replicas in that ring
   (idempotency.py: ring changes).
2. Receipt or abort (RESOLVE), only when another attempt holds the key: its holder answers
   the receipt (the retry replays it), or gives the attempt up: it releases its reservation,
   and since it applies only while that reservation is still its own (checked in the same
   loop turn as the apply), the attempt can never apply later. A holder that restarted
   answers "void": the process that reserved is gone. A holder that cannot be asked means
   "in doubt" (errors.InDoubt, 503 with Retry-After): nothing applies.
3. Reserve again, superseding the aborted attempts' reservations. After "void", every replica
   of the shard must answer (the dead attempt may have applied and sent its slot and
   receipt, which travel together, to any of them); one missing is "in doubt" again. An
   attempt given up meanwhile (its reservation here released) answers "in doubt" and never
   reserves here again: two attempts that gave each other up would both apply.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from crdt import PNCounter
from crdt.receipts import Receipt
from node.base.errors import CountersError, InDoubt, QuorumUnavailable
from node.base.keys import Key
from node.cluster import fence_wire, wire
from node.cluster.membership import Cluster
from node.coordination.quorum import QuorumWait
from node.coordination.replication import Replicator, needed
from node.storage.receipt_book import Reservation
from node.storage.store import CounterStore
from ring import Status

Name = tuple[Key, str]  # (counter, idempotency key)
Holder = fence_wire.Holder  # (node, process token) of an attempt
EMPTY = PNCounter.empty()
RETRY_AFTER_S = 1


@dataclass(slots=True)
class _Tally:
    """What the replicas asked said about one name in one round (one per keyed op: no set
    until another attempt is seen holding the name, which is rare)."""

    needed: int  # grants required, this node's included
    grants: int = 0
    holders: set[Holder] | None = None
    here: bool = False  # this node granted it in this round
    joint: _Tally | None = None  # a moving shard's: the grants of its replicas in the pending ring


def grants_needed(consistency: str, read_quorum: int, replicas: int) -> int:
    """Grants an attempt needs: a read quorum (to see any acknowledged receipt: R + W > N) and
    a majority (two attempts, or two sides of a partition, never both hold one)."""
    return max(needed(consistency, read_quorum, replicas), replicas // 2 + 1)


class Fence:
    def __init__(
        self,
        cluster: Cluster,
        store: CounterStore,
        replicator: Replicator,
        token: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.book = store.reservations
        self.replicator = replicator
        self.token = token or secrets.token_hex(8)  # this process's attempts
        self.in_doubt = 0  # keyed ops answered "in doubt", for metrics
        self.superseded = 0  # earlier attempts given up or found void, for metrics

    # -- what a replica answers ---------------------------------------------------------------

    def answer_reserve(self, body: Any) -> list[Any]:
        """RESERVE: per counter, its state (None if the sender's share says it is the same),
        and per key the receipt, a grant (None), or the holder [node, token]."""
        node, token, reads = fence_wire.reserve_from_wire(body)  # validate all before reserving any
        store, reserve, now_ms = self.store, self.book.reserve, _now_ms()
        answer: list[Any] = []
        for key, share, idems, superseded in reads:
            state = None if store.share(key) == share else _stated(store, key)
            found = [
                _reserve_answer(reserve(key, idem, node, token, now_ms, old))
                for idem, old in zip(idems, superseded, strict=True)
            ]
            answer.append([state, found])
        return answer

    def answer_resolve(self, body: Any) -> list[Any]:
        """RESOLVE, asked of a holder: per key its receipt, or the attempt given up."""
        token, reads = fence_wire.resolve_from_wire(body)
        here = self._resolve_here(token, reads)
        return [
            [
                None if state is None else _stated(self.store, key),
                [f if isinstance(f, str) else f.to_wire() for f in found],
            ]
            for (key, _), (state, found) in zip(reads, here, strict=True)
        ]

    def _resolve_here(
        self, token: str, reads: Iterable[tuple[Key, list[str]]]
    ) -> list[tuple[PNCounter | None, list[Receipt | str]]]:
        """Per counter, its state if a receipt is held, and per key the receipt, or ABORTED
        (this process's attempt, released: it can no longer apply) or VOID (an attempt of
        an earlier process of this node, which can no longer apply either)."""
        store, book, now_ms = self.store, self.book, _now_ms()
        gone = fence_wire.ABORTED if token == self.token else fence_wire.VOID
        out: list[tuple[PNCounter | None, list[Receipt | str]]] = []
        for key, idems in reads:
            found: list[Receipt | str] = []
            for idem in idems:
                receipt = store.receipt(key, idem, now_ms)
                if receipt is None:
                    book.release(key, idem, token)
                    found.append(gone)
                else:
                    found.append(receipt)
            held = any(isinstance(f, Receipt) for f in found)
            out.append(((store.get(key) or EMPTY) if held else None, found))
        return out

    # -- what the coordinator of a keyed op does -------------------------------------------------

    def holds(self, key: Key, idem: str, now_ms: int) -> bool:
        """Whether this process's attempt still holds the key here: checked in the loop turn
        that applies it, so an attempt given up (RESOLVE) never applies afterwards."""
        held = self.book.reservation(key, idem, now_ms)
        return held is not None and held.token == self.token

    async def reserve(
        self, names: dict[Name, int], consistency: str, now_ms: int
    ) -> dict[Name, CountersError]:
        """Reserve every name (counter, key) -> shard; the names that must not apply, with
        why. The others are granted, or their receipt is now held here (a replay)."""
        tallies = await self._round(names, {}, consistency, everyone=False)
        refused: dict[Name, CountersError] = {}
        contested: dict[Name, set[Holder]] = {}
        for name, tally in tallies.items():
            if self._settled(name, tally, now_ms):
                continue
            if tally.holders:
                contested[name] = tally.holders
            else:  # every answer was a grant, yet too few: the quorum is out of reach
                refused[name] = QuorumUnavailable(
                    "too few replicas granted the Idempotency-Key; nothing applied",
                    may_have_applied=False,
                )
        if contested:
            refused.update(await self._contest(names, tallies, contested, consistency, now_ms))
            self.in_doubt += sum(1 for error in refused.values() if isinstance(error, InDoubt))
        return refused

    def _settled(self, name: Name, tally: _Tally, now_ms: int) -> bool:
        if self.store.receipt(*name, now_ms) is not None:
            return True
        joint = tally.joint
        return tally.grants >= tally.needed and (joint is None or joint.grants >= joint.needed)

    async def _contest(
        self,
        names: dict[Name, int],
        first: dict[Name, _Tally],
        contested: dict[Name, set[Holder]],
        consistency: str,
        now_ms: int,
    ) -> dict[Name, CountersError]:
        """Steps 2 and 3 for names another attempt holds; `first`: step 1's tallies."""
        verdicts = await self._resolve(contested, now_ms)
        refused: dict[Name, CountersError] = {}
        again: dict[bool, dict[Name, int]] = {False: {}, True: {}}  # everyone? -> names
        for name, verdict in verdicts.items():
            if isinstance(verdict, CountersError):
                refused[name] = verdict
            elif verdict != "receipt":
                again[verdict == fence_wire.VOID][name] = names[name]
        superseded = {name: [token for _, token in contested[name]] for name in contested}
        for everyone, chosen in again.items():
            # Held here after step 1 and no more: another attempt's RESOLVE gave this one up
            # meanwhile, so it never reserves here again (step 3), checked in the loop turn
            # whose _round would reserve here.
            for name in [n for n in chosen if first[n].here and not self.holds(*n, _now_ms())]:
                del chosen[name]
                refused[name] = self._doubt("another attempt gave this one up")
            if not chosen:
                continue
            self.superseded += len(chosen)
            try:
                tallies = await self._round(chosen, superseded, consistency, everyone)
            except CountersError as error:
                for name in chosen:
                    refused[name] = self._doubt(f"not every replica answered ({error.detail})")
                continue
            for name, tally in tallies.items():
                if not self._settled(name, tally, now_ms):
                    refused[name] = self._doubt("another attempt holds this Idempotency-Key")
        return refused

    def _doubt(self, why: str) -> InDoubt:
        why = f"{why}; it may have applied; nothing applied now: retry later"
        return InDoubt(why, retry_after_s=RETRY_AFTER_S)

    async def _round(
        self,
        names: dict[Name, int],
        superseded: dict[Name, list[str]],
        consistency: str,
        everyone: bool,
    ) -> dict[Name, _Tally]:
        """Reserve here, then at the peers in one request per set of peers; `everyone`: all
        the shard's other replicas must answer, else a read quorum's worth (with spares)."""
        cluster, store, book = self.cluster, self.store, self.book
        me, token, now_ms = cluster.node_id, self.token, _now_ms()
        tallies: dict[Name, _Tally] = {}
        joints: dict[Name, _Tally] = {}  # the names of moving shards, in the pending ring
        # (peers, how many must answer, pending ring?) -> counter -> [keys], [superseded tokens]
        Asked = dict[Key, tuple[list[str], list[list[str]]]]
        groups: dict[tuple[tuple[str, ...], int, bool], Asked] = {}
        # who to ask depends on the shard's replicas only: asked once per preference list
        by_replicas: dict[tuple[str, ...], tuple[tuple[str, ...], int, int]] = {}
        replicas_of, moving_to = cluster.replicas, cluster.pending_replicas
        for name, shard in names.items():
            key, idem = name
            old = superseded.get(name, [])
            here = book.reserve(key, idem, me, token, now_ms, old)
            before, after = replicas_of(shard), moving_to(shard)
            sides = [(before, tallies)]
            if after is not None:  # a ring change moves the shard: both majorities (above)
                sides.append((after, joints))
            for replicas, side in sides:
                found = by_replicas.get(replicas)
                if found is None:
                    found = by_replicas[replicas] = self._peers(replicas, consistency, everyone)
                peers, wanted, required = found
                if side is joints and tallies[name].needed + required > len({*before, *replicas}):
                    break  # any grants enough for the current replicas meet any enough here
                tally = side[name] = _Tally(required, here=here is None)
                if me in replicas:
                    _count(tally, here)
                if wanted > 0:
                    group = groups.setdefault((peers, wanted, side is joints), {})
                    entry = group.setdefault(key, ([], []))
                    entry[0].append(idem)
                    entry[1].append(old)
        wait = QuorumWait("read")  # a failure here applies nothing
        for (peers, wanted, pending), asked in groups.items():
            body = fence_wire.reserve_to_wire(
                me, token, ((k, store.share(k), i, o) for k, (i, o) in asked.items())
            )
            on_reply = self._tallier(asked, joints if pending else tallies)
            if everyone:
                futures = [self._ask(node_id, wire.RESERVE, body) for node_id in peers]
                wait.add(futures, wanted, on_reply)
            else:
                self.replicator.ask_peers(wait, list(peers), wanted, wire.RESERVE, body, on_reply)
        try:
            await wait.wait(self.replicator.timeout)
        except QuorumUnavailable:
            pass  # a group too few answered: its names lack grants, which the caller refuses
        finally:
            for name, joint in joints.items():
                tally = tallies[name]
                tally.joint = joint
                if joint.holders:
                    tally.holders = (tally.holders or set()) | joint.holders
        return tallies

    def _peers(
        self, replicas: tuple[str, ...], consistency: str, everyone: bool
    ) -> tuple[tuple[str, ...], int, int]:
        """(peers to ask, how many must answer, grants needed in all) for a shard's replicas
        (this node among them or not: a moving shard's in the pending ring)."""
        cluster = self.cluster
        me = cluster.node_id
        # a replica still recovering (or joining) may not hold its receipts yet: it cannot vouch
        others = [n for n in replicas if n != me]
        serving = [n for n in others if cluster.serving(n)]
        if everyone:
            return tuple(serving), len(others), len(replicas)
        required = grants_needed(consistency, cluster.config.read_quorum, len(replicas))
        reachable = self.replicator.reachable  # those our link reaches first, others spares
        peers = tuple(sorted(serving, key=lambda n: not reachable(n)))
        return peers, required - (me in replicas), required

    def _ask(self, node_id: str, kind: int, body: Any) -> asyncio.Future[Any]:
        address = self.cluster.address_of(node_id)
        if address is None:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(QuorumUnavailable(f"no address for {node_id}"))
            return failed
        link = self.replicator.pool.link(address)
        return asyncio.ensure_future(link.call(kind, body, self.replicator.timeout))

    def _tallier(
        self, asked: dict[Key, tuple[list[str], list[list[str]]]], tallies: dict[Name, _Tally]
    ) -> Callable[[Any], None]:
        store = self.store
        keys = list(asked)
        expected = [len(asked[key][0]) for key in keys]

        def on_reply(reply: Any) -> None:
            # a bad reply grants nothing (it still counts as an answer for the wait)
            answers = fence_wire.reserve_answers_from_wire(reply, expected)  # all, before any
            for key, (state, found) in zip(keys, answers, strict=True):
                _merge_stated(store, key, state)
                for idem, answer in zip(asked[key][0], found, strict=True):
                    if isinstance(answer, Receipt):
                        store.add_receipt(key, idem, answer)
                    else:
                        _count(tallies[(key, idem)], answer)

        return _guarded(on_reply)

    async def _resolve(
        self, contested: dict[Name, set[Holder]], now_ms: int
    ) -> dict[Name, str | CountersError]:
        """Ask each holder: per name "receipt" (merged here), ABORTED, VOID, or InDoubt."""
        by_holder: dict[Holder, list[Name]] = {}
        for name, holders in contested.items():
            for holder in holders:
                by_holder.setdefault(holder, []).append(name)
        verdicts: dict[Name, str | CountersError] = {}
        asks = [self._ask_holder(holder, held) for holder, held in by_holder.items()]
        for outcome in await asyncio.gather(*asks):
            for name, verdict in outcome.items():
                verdicts[name] = _worse(verdicts.get(name), verdict)
        return verdicts

    async def _ask_holder(
        self, holder: Holder, held: list[Name]
    ) -> dict[Name, str | CountersError]:
        node, token = holder
        by_key: dict[Key, list[str]] = {}
        for key, idem in held:
            by_key.setdefault(key, []).append(idem)
        member = self.cluster.view.get(node)
        if node == self.cluster.node_id:
            # our own state needs no merging here
            answers: list[tuple[wire.Stated | None, list[Receipt | str]]] = [
                (None, found) for _, found in self._resolve_here(token, by_key.items())
            ]
        elif member is None or member.status is Status.REMOVED:
            # removed from the cluster by an operator: its process counts as gone
            return {name: fence_wire.VOID for name in held}
        else:
            body = fence_wire.resolve_to_wire(token, by_key.items())
            try:
                reply = await self._ask(node, wire.RESOLVE, body)
                expected = [len(idems) for idems in by_key.values()]
                answers = fence_wire.resolve_answers_from_wire(reply, expected)
            except (CountersError, wire.ProtocolError) as error:
                doubt = self._doubt(f"the attempt held by {node} cannot be asked ({error})")
                return {name: doubt for name in held}
        out: dict[Name, str | CountersError] = {}
        for (key, idems), (state, found) in zip(by_key.items(), answers, strict=True):
            _merge_stated(self.store, key, state)
            for idem, answer in zip(idems, found, strict=True):
                if isinstance(answer, str):
                    out[(key, idem)] = answer
                else:
                    self.store.add_receipt(key, idem, answer)
                    out[(key, idem)] = "receipt"
        return out


def _stated(store: CounterStore, key: Key) -> list[Any]:
    """Our state of a counter as a reply carries it: with its receipts not yet durable
    here (idempotency.py: a slot never leaves without them)."""
    return wire.stated_to_wire(store.get(key) or EMPTY, store.unflushed_receipts(key))


def _merge_stated(store: CounterStore, key: Key, stated: wire.Stated | None) -> None:
    """A peer's state with the receipts it sent: the receipts first, then the slots."""
    if stated is not None:
        state, found = stated
        if found:
            store.add_receipts(key, found)
        store.merge(key, state)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _count(tally: _Tally, answer: Receipt | Reservation | Holder | None) -> None:
    if answer is None:
        tally.grants += 1
    elif isinstance(answer, Reservation):
        _held_by(tally, (answer.node, answer.token))
    elif isinstance(answer, tuple):
        _held_by(tally, answer)
    # a receipt is held in the store now: the op replays


def _held_by(tally: _Tally, holder: Holder) -> None:
    if tally.holders is None:
        tally.holders = {holder}
    else:
        tally.holders.add(holder)


def _reserve_answer(got: Receipt | Reservation | None) -> Any:
    if got is None:
        return None
    if isinstance(got, Reservation):
        return [got.node, got.token]
    return got.to_wire()


_RANK = {"receipt": 0, fence_wire.ABORTED: 1, fence_wire.VOID: 2}


def _worse(mine: str | CountersError | None, theirs: str | CountersError) -> str | CountersError:
    """One name's verdict over its holders: a receipt wins (it replays); else any doubt."""
    if mine is None:
        return theirs
    if mine == "receipt" or theirs == "receipt":
        return "receipt"
    if isinstance(mine, CountersError):
        return mine
    if isinstance(theirs, CountersError):
        return theirs
    return mine if _RANK[mine] >= _RANK[theirs] else theirs


def _guarded(on_reply: Callable[[Any], None]) -> Callable[[Any], None]:
    def guarded(reply: Any) -> None:
        try:
            on_reply(reply)
        except wire.ProtocolError:
            pass  # a peer that answers nonsense grants nothing

    return guarded

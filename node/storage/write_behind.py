"""Write-behind to the durable replica, and the wait that sync durability needs.

Every `persist_interval_s` the persister takes the counters changed since the last flush
(the slots that changed, at their current values: slots only grow and both durable replicas
merge slot by slot, so the latest value covers every change; CounterStore.take_dirty; only
the slots this node answers for, node/cluster/slot_owners.py) and
writes them in one batch, together with the receipts and this node's reservations (grants of
idempotency keys) taken or ended since: one `write_changes`, in which each counter's changed
slots and its receipts are one atomic write. A keyed op changes its slot and adds its
receipt in one loop turn, so both are taken by the same flush, and a kill mid-flush never
stores an increment without its receipt. A failed flush puts all of it back, so the backlog
is at most the number of counters held in memory, and it drains when the store returns.

A shared replica (Redis) can come back empty while the nodes run (FLUSHALL, a restart
without persistence, a failover to an empty replica), and a flush writes only what changed.
So a node marks there each shard it holds before its first write of it, and checks its
marks every PING_INTERVAL_S: for each one missing it writes again every slot of the shard it
answers for (the slot rule's takeover scan, mark_shard_slots_dirty), the shard's receipts
and its reservations, records its incarnation again, and logs a warning.

`durable()` is group commit for sync writes: a write waits for the first flush that starts
after it was applied, and a waiting write starts that flush at once, so concurrent writes
share one round trip instead of each paying its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from crdt import PNCounter
from node.base.errors import QuorumTimeout, QuorumUnavailable
from node.base.keys import Key
from node.obs.tracing import OFF, Tracing
from node.storage.durable import DurableError, DurableReplica, MarkedReplica
from node.storage.receipt_book import DirtyReceipt, DirtyReservation
from node.storage.store import CounterStore

log = logging.getLogger("counters.persistence")
PING_INTERVAL_S = 1.0  # how often an idle node checks that its durable replica answers
UNHEALTHY_CLOSE_S = 2.0  # the last flush's bound at stop while the durable replica is down
PROBE_FRESH_S = 0.05  # how old a sync write's reachability check may be
Rule = Callable[[int, str], bool]  # (shard, actor) -> whether this node writes that slot
# (token, the slots written, those of them that are another node's: None, take none over)
SlotRule = Callable[[], tuple[tuple[object, ...], Rule, Rule | None]]


class Persister:
    def __init__(
        self,
        store: CounterStore,
        durable: DurableReplica,
        interval_s: float,
        receipt_window_s: float = 86400.0,
        tracing: Tracing = OFF,
        observe_flush: Callable[[float], object] | None = None,
        slot_rule: SlotRule | None = None,
        max_backlog: int = 0,
    ) -> None:
        self.store = store
        self.tracing = tracing
        self.receipt_window_ms = int(receipt_window_s * 1000)
        self.durable = durable
        self.interval_s = interval_s
        self.healthy = True
        self.last_error = ""
        self.unhealthy_since: float | None = None  # unix time the current outage began
        self.last_flush_s = 0.0
        # Unix time: everything this node applied before it is in the durable replica (the
        # start of the last flush that succeeded); what a crash now could lose came after.
        self.durable_through = 0.0
        self.flushes = 0
        self.flush_failures = 0
        self.observe_flush = observe_flush  # seconds each flush took, for metrics
        # which slots this node writes (cluster/slot_owners.py; None: every slot it holds),
        # and the token of the rule the last flush followed
        self.slot_rule = slot_rule
        self._rule_token: tuple[object, ...] = ()
        self.taken_over = 0  # counters whose slots this node took over writing, for metrics
        self._waiters: list[asyncio.Future[None]] = []
        # counters unflushed (changed, or in the flush under way) past which acknowledgements
        # wait for flushes (0: never); and the flush under way's counters
        self.max_backlog = max_backlog
        self._in_flight = 0
        self._flushed: asyncio.Event | None = None  # set at the end of each flush
        self.pressure_waits = 0  # acknowledgements that waited for the backlog, for metrics
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._checked_at = 0.0
        self._probe: asyncio.Future[bool] | None = None
        self._probed_at = 0.0
        self._durable_expiring = True  # the durable replica may hold expired receipts
        # a shared replica that may come back empty (Redis), the shards this node marked
        # there, and when it last checked the marks (monotonic)
        self._marks = durable if isinstance(durable, MarkedReplica) else None
        self._marked: set[int] = set()
        self._marks_checked_at = -PING_INTERVAL_S
        self._incarnation_lost = False  # to be recorded again there (until that succeeds)
        self._refilling: set[int] = set()  # lost shards whose data the next flush carries

    @property
    def backlog(self) -> int:
        """Counters waiting for the durable replica, those of a flush in flight included (a
        counter changed again during its flush counts twice): a flush stuck on an outage
        holds the backlog, which must not read 0 meanwhile."""
        return self.store.dirty_count() + self._in_flight

    async def run(self) -> None:
        """Flush every interval, or at once for a sync write; the node runs this loop's
        turns under its supervisor (node/obs/supervision.py) instead."""
        while True:
            await self.next_turn()
            await self.flush()

    async def next_turn(self) -> None:
        """Wait until the next flush is due: the interval passed or a sync write waits."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), self.interval_s)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def flush(self) -> None:
        async with self._lock:
            waiters, self._waiters = self._waiters, []
            began_at = time.time()  # before taking: a write applied later is not in this flush
            now_ms = int(began_at * 1000)
            # Receipts also expire on an idle node; the durable replica drops its expired
            # ones on a receipt write, so one goes out when some expired here.
            expired = self.store.expire_receipts(now_ms) or self._durable_expiring
            writes = await self._follow_rule() if self.slot_rule is not None else None
            entries = self.store.take_dirty(writes)
            receipts = self.store.take_dirty_receipts()
            reservations = self.store.take_dirty_reservations()
            started = time.monotonic()
            self._in_flight = len(entries)
            try:
                if self._marks is not None:
                    await self._refill_if_emptied(self._marks)
                if entries or receipts or reservations or expired:
                    attributes = {
                        "counters.counters": len(entries),
                        "counters.durable": self.durable.name,
                    }
                    with self.tracing.span("persist flush", attributes=attributes):
                        dropped = await self.durable.write_changes(
                            entries, receipts, reservations, self.receipt_window_ms, now_ms
                        )
                    self._durable_expiring = dropped > 0  # more may be left: trim again
                    self._checked_at = started
                elif started - self._checked_at >= PING_INTERVAL_S or not self.healthy:
                    await self.durable.ping()  # so an idle node notices an outage too
                    self._checked_at = started
            except asyncio.CancelledError:
                # A stop cancels the loop mid-flush (App.close), maybe before the durable
                # replica got anything: what was taken waits for the last flush (close), and
                # so do the sync writes that waited for this one. Writing it twice is harmless.
                self._flush_ended()
                self._put_back(entries, receipts, reservations)
                self._waiters = waiters + self._waiters
                raise
            except Exception as error:
                # Whatever failed, nothing taken is lost: it waits for the next flush.
                self._flush_ended()
                self.flush_failures += 1
                self._put_back(entries, receipts, reservations)
                expected = isinstance(error, DurableError)
                if self.healthy and expected:
                    log.warning(
                        "durable replica unreachable, %d counters wait: %s", len(entries), error
                    )
                self._unhealthy(str(error) if expected else f"{type(error).__name__}: {error}")
                _settle(waiters, error if expected else DurableError(self.last_error))
                if expected:
                    return
                raise  # a bug or an unmapped error: the supervisor logs it and backs off
            self._flush_ended()
            self.store.receipts_flushed(receipts)  # durable now: states travel without them
            if not self.healthy:
                log.info("durable replica back; flushed %d counters", len(entries))
            self.healthy, self.last_error, self.unhealthy_since = True, "", None
            self.last_flush_s = time.monotonic() - started
            self.durable_through = began_at
            self.flushes += 1
            if self.observe_flush is not None and (entries or receipts or expired):
                self.observe_flush(self.last_flush_s)
            _settle(waiters, None)

    async def keep(
        self, entries: list[tuple[Key, int, PNCounter]], receipts: list[DirtyReceipt]
    ) -> None:
        """Write these states, every slot, and their receipts to the durable replica now:
        what a PUSH brings, before the PUSH is answered, when that copy is this node's alone
        (a shared copy, Redis, already holds what the pusher wrote, in the same keys: the
        caller asks none). A hand-over's pusher forgets its own copy once every owner
        answered (node/cluster/handover.py), while the owners' slot rule writes the pusher's
        slots only at their next flush, so without this a whole-cluster kill -9 in between
        lost them from every disk."""
        if not (entries or receipts):
            return
        now_ms = int(time.time() * 1000)
        await self.durable.write_changes(entries, receipts, (), self.receipt_window_ms, now_ms)

    def _put_back(
        self,
        entries: list[tuple[Key, int, PNCounter]],
        receipts: list[DirtyReceipt],
        reservations: list[DirtyReservation],
    ) -> None:
        """What a flush took and did not write: dirty again, for the next one."""
        self.store.mark_dirty(entries)
        self.store.mark_receipts_dirty(receipts)
        self.store.mark_reservations_dirty(reservations)

    def _flush_ended(self) -> None:
        self._in_flight = 0
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    @property
    def pressing(self) -> bool:
        """Whether an acknowledgement must wait for the backlog now (below_backlog): asked
        on every write before any coroutine is made for the rare wait."""
        return bool(self.max_backlog) and self.backlog > self.max_backlog and self.healthy

    async def below_backlog(self, timeout: float) -> None:
        """Back-pressure: return once the unflushed counters are at most max_backlog, or
        after `timeout` (the write applied already; holding its acknowledgement slows the
        writers to the pace of the durable replica), or at once with no bound set or the
        durable replica unhealthy (then the backlog waits for it, as it always has)."""
        if not self.max_backlog or self.backlog <= self.max_backlog or not self.healthy:
            return
        self.pressure_waits += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.backlog > self.max_backlog and self.healthy:
                    if self._flushed is None:
                        self._flushed = asyncio.Event()
                    await self._flushed.wait()

    async def reachable(self, timeout: float) -> bool:
        """Whether the durable replica answers now, asked at most every PROBE_FRESH_S.

        Sync writes ask before applying anything, so an outage refuses them with nothing
        applied; only one that begins within PROBE_FRESH_S of the check can still apply in
        memory and then fail (its 503 says so). Concurrent writes share one probe.
        """
        now = time.monotonic()
        if self._probe is None or (self._probe.done() and now - self._probed_at > PROBE_FRESH_S):
            self._probed_at = now
            self._probe = asyncio.ensure_future(self._ping())
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), timeout)
        except TimeoutError:
            return False

    async def _ping(self) -> bool:
        try:
            await self.durable.ping()
        except DurableError as error:
            if self.healthy:  # the flush logs an outage it notices first; this one, here
                log.warning("durable replica unreachable: %s", error)
            self._unhealthy(str(error))
            return False
        return True

    def _unhealthy(self, error: str) -> None:
        if self.healthy or self.unhealthy_since is None:
            self.unhealthy_since = time.time()
        self.healthy, self.last_error = False, error

    async def durable_now(self, timeout: float) -> None:
        """Return once everything applied before this call is in the durable replica."""
        if not self.healthy:
            raise QuorumUnavailable(
                f"the durable replica is unreachable ({self.last_error}); the write applied in "
                "memory and will persist when it returns",
                may_have_applied=True,
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wakeup.set()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise QuorumTimeout(
                "the durable replica did not confirm in time; the write may still apply",
                may_have_applied=True,
            ) from None
        except DurableError as error:
            raise QuorumUnavailable(
                f"the durable replica failed ({error}); the write applied in memory and "
                "will persist when it returns",
                may_have_applied=True,
            ) from None

    async def load(self, shards: set[int] | frozenset[int]) -> int:
        """Merge the durable copy of these shards into memory; returns how many counters."""
        # A load makes millions of long-lived objects, none of them cyclic; meanwhile the
        # cyclic collector would traverse the growing heap again and again (a sixth of a
        # start's CPU at a million counters), so it waits until the load is done.
        # Page by page (each read in a worker thread, then taken into the store in one
        # loop turn), so the loop serves between pages.
        collecting = gc.isenabled()
        gc.disable()
        count = 0
        try:
            async for page in self.durable.load_pages(shards):
                count += self.store.load_page(page)
        finally:
            if collecting:
                gc.enable()
        now_ms = int(time.time() * 1000)
        async for receipts in self.durable.load_receipts(shards, now_ms):
            self.store.load_receipts(receipts)
        async for held in self.durable.load_reservations(shards, now_ms):
            self.store.load_reservations(held, now_ms)  # this node's grants, before a restart
        return count

    def status(self) -> dict[str, Any]:
        return {
            "durable": self.durable.name,
            "healthy": self.healthy,
            "backlog": self.backlog,
            "last_flush_s": round(self.last_flush_s, 6),
            "durable_through": round(self.durable_through, 6),
            "flushes": self.flushes,
            "last_error": self.last_error,
            "unhealthy_since": self.unhealthy_since and round(self.unhealthy_since, 3),
        }

    def degraded(self) -> str:
        """What an outage of the durable replica means for this node now; "" when healthy."""
        if self.healthy:
            return ""
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.unhealthy_since or 0))
        return (
            f"durable replica degraded: backlog {self.backlog}, since {since} ({self.last_error})"
        )

    async def _follow_rule(self) -> Rule:
        """The slots this flush writes. When the rule changed since the last flush (a node
        went down, the ring moved), first mark every slot this node is newly responsible
        for, so a slot whose owner died before writing it is written here: a scan of the
        counters holding such slots, a shard at a time, so the loop keeps serving meanwhile."""
        assert self.slot_rule is not None
        token, writes, foreign = self.slot_rule()
        if token != self._rule_token and foreign is not None:
            for shard in self.store.shard_numbers():  # a shard per loop turn
                self.taken_over += self.store.mark_shard_slots_dirty(shard, foreign)
                await asyncio.sleep(0)
        self._rule_token = token
        return writes

    async def _refill_if_emptied(self, marks: MarkedReplica) -> None:
        """Every PING_INTERVAL_S: when a shard's mark (written by the first flush after this
        node came to hold the shard, before its writes) is missing, the shared replica lost
        what this node wrote there (a FLUSHALL, a restart without persistence, a failover to
        an empty replica), and a flush writes only what changed since the last one: mark
        every slot of the shard this node answers for, and its receipts and reservations,
        for the next flush (at once), and record this node's incarnation again. A lost
        shard's mark is written again only by the flush that carries its data (a failed
        write puts the data back, still dirty), and the incarnation is recorded until that
        succeeds: a call that fails here (a DurableError fails the flush), or a node that
        dies before that flush, loses nothing of the refill (the mark is still missing)."""
        started = time.monotonic()
        held = {*self.store.shard_numbers(), *self.store.receipt_shards()}
        self._marked &= held  # a shard dropped and held again is new again
        new = held - self._marked  # marked before this flush writes them
        refilled = self._refilling & held  # their data goes in this flush
        due = started - self._marks_checked_at >= PING_INTERVAL_S
        if not (new or refilled or due or self._incarnation_lost):
            return
        if new or refilled:
            await marks.mark_shards(new | refilled)
            self._refilling -= refilled
        self._marked |= new
        checked = self._marked - self._refilling
        lost = await marks.unmarked_shards(checked) if due and checked else []
        if due:
            self._marks_checked_at = started
        if lost:
            self._incarnation_lost = True
            self._refilling.update(lost)
            writes = self.slot_rule()[1] if self.slot_rule is not None else _every
            counters = 0
            for shard in lost:  # a shard per loop turn
                counters += self.store.mark_shard_slots_dirty(shard, writes)
                self._mark_receipts_dirty(shard)
                await asyncio.sleep(0)
            self._wakeup.set()  # they go in the next flush, at once
            message = "the durable replica lost this node's writes of %d shards; writing %d again"
            log.warning(message, len(lost), counters)
        if self._incarnation_lost:
            await marks.record_incarnations_again()
            self._incarnation_lost = False

    def _mark_receipts_dirty(self, shard: int) -> None:
        """The shard's receipts and this node's reservations, for the next flush."""
        book, now_ms = self.store.reservations, int(time.time() * 1000)
        self.store.mark_receipts_dirty(
            (key, shard, idem, receipt)
            for key in book.keys_of_shard(shard)
            for idem, receipt in book.of(key, now_ms).items()
        )
        self.store.mark_reservations_dirty(
            (key, shard, idem, held)
            for key, by_idem in book.reservations_in({shard}, now_ms).items()
            for idem, held in by_idem.items()
        )

    async def close(self) -> None:
        """A clean stop loses nothing: one last flush. With the durable replica unreachable
        it gets one short try, so a node still stops within an orchestrator's grace period;
        what it could not write is logged (async mode: the other replicas hold it)."""
        try:
            async with asyncio.timeout(None if self.healthy else UNHEALTHY_CLOSE_S):
                await self.flush()
        except TimeoutError:
            self._unhealthy(f"no answer within {UNHEALTHY_CLOSE_S:g}s at stop")
        finally:
            if not self.healthy:
                log.warning(
                    "stopping with %d changes not written to the durable replica: %s",
                    self.backlog,
                    self.last_error,
                )
            await self.durable.close()


def _every(shard: int, actor: str) -> bool:
    return True


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

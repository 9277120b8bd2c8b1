"""The add() path: the coalescing buffer, its flushes, the batches they send, the tallies.

A flush runs every `flush_interval_ms`, when `max_batch` counters are pending, and on
`flush()` and `close()`; but at most `max_requests` batches are in flight at once, and a
flush takes only what it can send now (the heaviest and the oldest counters, see
buffer.py), so when the cluster is slower than the adds the buffer keeps summing instead of
queueing requests: each op then carries more adds, and the cluster's rate of ops, not of
adds, is what bounds the throughput. What one flush took makes a batch per namespace and
coordinator; those beyond the free slots wait for one (`flush()` takes everything pending
so, and waits only for the batches planned before it returns). Each batch goes to the
coordinator of its counters under an Idempotency-Key it keeps across its retries, so it
applies once however often it is sent. A batch refused 429 without Retry-After (it costs
more than the tenant's rate-limit burst: nothing applied, no retry helps) is sent again in
halves, each under a new key, down to one op; a single op refused so fails at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from counters_client import errors
from counters_client.buffer import Coalescer, Entry, Generation
from counters_client.transport import Route, Transport

log = logging.getLogger("counters_client")

# Called once per add() batch when it settles: the namespace and, per counter, (name, summed
# delta, add() calls summed, None when acknowledged or the error the client gave it up on).
Listener = Callable[[str, list[tuple[str, int, int, errors.CountersError | None]]], None]
LATENCY_SAMPLES = 100_000  # the most recent add-to-acknowledged times kept
FAILURES_KEPT = 16  # failed add() batches whose error flush() may raise; the rest counted


@dataclass
class Stats:
    """What the client has done with add() calls: `added` counts those a flush has taken;
    each of them ends acknowledged or failed (refused, or given up at the deadline;
    `failed_unknown` of those may still have applied)."""

    added: int = 0
    acknowledged: int = 0
    failed: int = 0
    failed_unknown: int = 0
    batches: int = 0
    ops_sent: int = 0


def path(*parts: str) -> str:
    """The URL path of a namespace's resource, each part quoted."""
    return "/v1/namespaces/" + "/".join(quote(part, safe="") for part in parts)


class Batcher:
    """Sends what add() buffered; `lock` when other threads add (the blocking Client)."""

    def __init__(
        self,
        transport: Transport,
        buffer: Coalescer,
        *,
        flush_interval_s: float,
        max_batch: int,
        max_requests: int,
        params: dict[str, str] | None,
        listener: Listener | None,
        lock: threading.Condition | None = None,
    ) -> None:
        self.transport = transport
        self.buffer = buffer
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_requests = max(1, max_requests)
        self.params = params
        self.listener = listener
        self.lock = lock
        self.kicked = False  # a flush is already asked for by another thread's add()
        self.stats = Stats()
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.failures: list[errors.CountersError] = []  # the first not yet raised by flush()
        self.failures_unkept = 0  # failed batches since then beyond the FAILURES_KEPT
        self._sending: dict[asyncio.Task[None], int] = {}  # batch in flight -> its number
        # batches taken from the buffer and waiting for a slot: (number, namespace, ops)
        self._planned: collections.deque[tuple[int, str, list[tuple[str, Entry]]]] = (
            collections.deque()
        )
        self._numbered = 0  # batches planned so far (the next one's number)
        self._unsettled: set[int] = set()  # numbers of the batches planned, not yet settled
        self._settled = asyncio.Event()  # set as a batch settles
        self._room = asyncio.Event()
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def add(self, namespace: str, name: str, delta: int) -> None:
        if self.buffer.add(namespace, name, delta) >= self.max_batch:
            self.flush_now()

    async def put(self, namespace: str, name: str, delta: int = 1) -> None:
        """add(), waiting for room (up to deadline_s) instead of raising BufferFull."""
        deadline = time.monotonic() + self.transport.options.deadline_s
        while True:
            if self._closed:  # also after waiting: a close() may have flushed for the last time
                raise RuntimeError("the client is closed")
            try:
                return self.add(namespace, name, delta)
            except errors.BufferFull:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), remaining)
                except TimeoutError:
                    raise errors.BufferFull("no room within the deadline") from None

    async def flush(self) -> None:
        """Send what is pending and wait until every batch pending or in flight when it was
        called has settled (not those of adds made meanwhile); raise the first failure
        (DeadlineExceeded, a refusal) since the last flush()."""
        await self.drain()
        self.raise_failures()

    async def drain(self) -> None:
        """Take everything pending into batches, sent as slots free, and wait until every
        batch planned so far has settled."""
        self._plan_pending(None)
        self.flush_now()
        upto = self._numbered
        while self._unsettled and min(self._unsettled) < upto:
            self._settled.clear()
            await self._settled.wait()

    async def abandon(self) -> None:
        """What a close() cut short does before the session closes: the counters pending
        and the batches waiting for a slot fail as NotSent (nothing applied); the batches
        in flight are cancelled, and each reports its failure (it may have applied)."""
        unsent = errors.NotSent("a close() cut short before the batch was sent")
        self._plan_pending(None)
        while self._planned:
            number, namespace, ops = self._planned.popleft()
            self._report(namespace, ops, [unsent] * len(ops))
            self._unsettled.discard(number)
        self._settled.set()
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def raise_failures(self) -> None:
        """Raise the first failure since the last call; a note counts the others."""
        if self.failures:
            first = self.failures[0]
            more = len(self.failures) - 1 + self.failures_unkept
            self.failures, self.failures_unkept = [], 0
            if more:
                first.add_note(f"{more} more add() batches failed since the last flush()")
            raise first

    async def flush_loop(self) -> None:
        """Flush every flush_interval_s; an unexpected error is logged, and the loop backs
        off a second and carries on (a dead flusher would strand every later add)."""
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                self.flush_now()
                if self.transport.stale():
                    self.transport.refresh_soon()
            except Exception:
                log.exception("a flush failed; trying again in 1 s")
                await asyncio.sleep(1.0)

    def flush_now(self) -> None:
        """Fill the free slots: with the batches planned first, then with what is pending
        (as much as the free slots take). When every slot is taken the buffer goes on
        summing."""
        sending = self._sending
        while len(sending) < self.max_requests:
            if not self._planned:
                free = self.max_requests - len(sending)
                if not self._plan_pending(free * self.max_batch):
                    return
            number, namespace, ops = self._planned.popleft()
            task = asyncio.get_running_loop().create_task(self._send_batch(namespace, ops))
            sending[task] = number
            task.add_done_callback(self._sent)

    def _plan_pending(self, limit: int | None) -> bool:
        """Take up to `limit` pending counters (None: all) into numbered batches waiting
        for a slot; False when nothing was pending."""
        generation = self._take(limit)
        if generation is None:
            return False
        self.stats.added += generation.adds
        for namespace, ops in self._plan(generation):
            self._planned.append((self._numbered, namespace, ops))
            self._unsettled.add(self._numbered)
            self._numbered += 1
        return True

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._unsettled.discard(self._sending.pop(task))
        self._settled.set()
        if self._planned or (self.buffer.count >= self.max_batch and not self._closed):
            self.flush_now()  # batches waiting for a slot, or a backlog built up meanwhile

    def _take(self, limit: int | None) -> Generation | None:
        if self.lock is None:
            return self.buffer.take(limit)
        with self.lock:
            self.kicked = False
            return self.buffer.take(limit)

    def _settle(self, entries: int) -> None:
        if self.lock is None:
            self.buffer.settle(entries)
        else:
            with self.lock:
                self.buffer.settle(entries)
                self.lock.notify_all()
        self._room.set()

    def _plan(self, generation: Generation) -> list[tuple[str, list[tuple[str, Entry]]]]:
        """The generation's batches: per namespace and coordinator, at most max_batch ops."""
        topology = self.transport.topology
        suspects = self.transport.suspects()
        groups: dict[tuple[str, Any], list[tuple[str, Entry]]] = {}
        coordinators: dict[int, str | None] = {}
        for namespace, bucket in generation.ops.items():
            for name, entry in bucket.items():
                target = None
                if topology is not None:
                    shard = topology.shard_of(namespace, name)
                    target = coordinators.get(shard, "")
                    if target == "":
                        target = coordinators[shard] = topology.coordinator(shard, suspects)
                group = groups.get((namespace, target))
                if group is None:
                    group = groups[(namespace, target)] = []
                group.append((name, entry))
        size = self.max_batch
        return [
            (namespace, ops[start : start + size])
            for (namespace, _), ops in groups.items()
            for start in range(0, len(ops), size)
        ]

    async def _send_batch(self, namespace: str, ops: list[tuple[str, Entry]]) -> None:
        """Send a batch and report its outcomes; one larger than the tenant's burst goes
        again in halves (see the module docstring)."""
        parts = [ops]
        while parts:
            part = parts.pop()
            try:
                outcomes = await self._send_part(namespace, part)
            except BaseException as error:
                # Cut short: a close() that timed out or was cancelled, the program's loop
                # ending, the session closed under it. It may have applied (the halves not
                # sent yet did not); it is reported and its room freed like any failure,
                # never left to sit in the buffer unsaid.
                cut = errors.ConnectionFailed(f"the batch was cut short: {error!r}")
                self._report(namespace, part, [cut] * len(part))
                unsent = errors.NotSent(f"the batch was cut short: {error!r}")
                for left in parts:
                    self._report(namespace, left, [unsent] * len(left))
                raise
            if outcomes is None:
                half = len(part) // 2
                parts += [part[half:], part[:half]]
            else:
                self._report(namespace, part, outcomes)

    async def _send_part(
        self, namespace: str, ops: list[tuple[str, Entry]]
    ) -> list[errors.CountersError | None] | None:
        """One batch request's outcome per op (None: acknowledged); None for them all when
        the batch is larger than the tenant's burst and should go in smaller parts."""
        body = json.dumps(
            {"ops": [{"op": "increment", "name": name, "delta": e[0]} for name, e in ops]},
            separators=(",", ":"),
        ).encode()
        route = self.transport.coordinator_route(namespace, ops[0][0])
        self.stats.batches += 1
        self.stats.ops_sent += len(ops)
        outcomes: list[errors.CountersError | None]
        try:
            reply = await self.batch_call(namespace, body, route, key=new_key())
            outcomes = [op_error(result) for result in reply["results"]]
            if len(outcomes) != len(ops):
                raise ValueError(f"{len(outcomes)} results for {len(ops)} ops")
        except errors.CountersError as error:
            if isinstance(error, errors.RateLimited) and len(ops) > 1:
                # raised at once only when no retry helps (retry.py): nothing applied, and a
                # part may fit the burst (a single op does not, and fails); unless an earlier
                # attempt under this key may have applied: parts under new keys could double it
                if not error.may_have_applied:
                    return None
            outcomes = [error] * len(ops)
            if error.reply is not None:
                # the last answer's values stand (those ops applied); the others failed, and
                # may have applied if their answer, or an attempt not answered, says so
                with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                    answered = [op_error(result) for result in error.reply["results"]]
                    if len(answered) == len(ops):
                        outcomes = [None if e is None else _op_failed(error, e) for e in answered]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # A 200 that is not a batch answer: it may have applied, like a timeout.
            outcomes = [errors.ServerError(f"a batch answer unlike any: {error!r}")] * len(ops)
        return outcomes

    def _report(
        self,
        namespace: str,
        ops: list[tuple[str, Entry]],
        outcomes: list[errors.CountersError | None],
    ) -> None:
        """Tally a batch's outcomes, keep its first failure for flush(), free its room."""
        settled = [
            (name, entry[0], entry[1], outcome)
            for (name, entry), outcome in zip(ops, outcomes, strict=True)
        ]
        stats = self.stats
        first: errors.CountersError | None = None
        done = time.perf_counter()
        for (_, entry), (_, _, adds, outcome) in zip(ops, settled, strict=True):
            if outcome is None:
                stats.acknowledged += adds
                if entry[2] is not None:
                    self.latencies.extend(done - added for added in entry[2])
                continue
            stats.failed += adds
            if outcome.may_have_applied:
                stats.failed_unknown += adds
            first = first or outcome
        if first is not None:
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append(first)
            else:
                self.failures_unkept += 1
            log.warning("a batch of %d counters in %s failed: %s", len(ops), namespace, first)
        self._settle(len(ops))
        if self.listener is not None:
            self.listener(namespace, settled)

    async def batch_call(
        self, namespace: str, body: bytes, route: Route, key: str | None
    ) -> dict[str, Any]:
        reply: dict[str, Any] = await self.transport.call(
            "POST",
            route,
            path(namespace) + "/batch",
            body,
            idempotency_key=key,
            params=self.params,
            check=retryable_op_error,
        )
        return reply


def _op_failed(error: errors.CountersError, own: errors.CountersError) -> errors.CountersError:
    """The call's error as one op's outcome: it may have applied if the op's own answer or
    an unanswered attempt says so (not because other ops of the batch applied)."""
    failed = copy.copy(error)
    failed.earlier_may_have_applied = error.unanswered_may_have_applied or own.may_have_applied
    return failed


def new_key() -> str:
    return "cc-" + secrets.token_hex(12)


def op_error(result: dict[str, Any]) -> errors.CountersError | None:
    problem = result.get("error")
    if problem is None:
        return None
    return errors.from_problem(int(problem.get("status", 500)), problem)


def retryable_op_error(reply: Any) -> errors.CountersError | None:
    """A batch answered 200 with an op that failed for a reason a retry can mend (no quorum,
    a timeout): the whole batch is sent again under its key, and the ops that did apply
    answer from their receipts."""
    for result in reply.get("results", ()):
        problem = result.get("error")
        if problem is not None and int(problem.get("status", 500)) >= 500:
            return errors.from_problem(int(problem["status"]), problem)
    return None

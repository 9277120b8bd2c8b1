"""The add() path: the coalescing buffer, its flushes, the batches they send, the tallies.

A flush runs every `flush_interval_ms`, when `max_batch` counters are pending, and on
`flush()` and `close()`; but at most `max_requests` batches are in flight at once, and a
flush takes only what it can send now (the heaviest and the oldest counters, see
buffer.py), so when the cluster is slower than the adds the buffer keeps summing instead of
queueing requests: each op then carries more adds, and the cluster's rate of ops, not of
adds, is what bounds the throughput. Each batch goes to the coordinator of its counters
under an Idempotency-Key it keeps across its retries, so it applies once however often it
is sent.
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
        self.failures: list[errors.CountersError] = []  # not yet raised by flush()
        self._sending: set[asyncio.Task[None]] = set()
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
        """Send what is pending and wait until every batch sent so far has settled; raise
        the first failure (DeadlineExceeded, a refusal) since the last flush()."""
        await self.drain()
        self.raise_failures()

    async def drain(self) -> None:
        self.flush_now()
        while self._sending:
            await asyncio.wait(list(self._sending), return_when=asyncio.FIRST_COMPLETED)
            self.flush_now()  # adds made, or held back, while waiting

    async def abandon(self) -> None:
        """Cancel the batches in flight and wait until each has reported its failure: what
        a close() cut short does before the session closes under them."""
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def raise_failures(self) -> None:
        if self.failures:
            first, self.failures = self.failures[0], []
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
        free = self.max_requests - len(self._sending)
        generation = self._take(free * self.max_batch) if free > 0 else None
        if generation is None:
            return  # nothing pending, or every slot taken: the buffer goes on summing
        self.stats.added += generation.adds
        loop = asyncio.get_running_loop()
        for namespace, ops in self._plan(generation):
            task = loop.create_task(self._send_batch(namespace, ops))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self.buffer.count >= self.max_batch and not self._closed:
            self.flush_now()  # a backlog built up while the slots were taken

    def _take(self, limit: int) -> Generation | None:
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
        except BaseException as error:
            # Cut short: a close() that timed out or was cancelled, the program's loop
            # ending, the session closed under it. It may have applied; it is reported and
            # its room freed like any failure, never left to sit in the buffer unsaid.
            cut = errors.ConnectionFailed(f"the batch was cut short: {error!r}")
            self._report(namespace, ops, [cut] * len(ops))
            raise
        self._report(namespace, ops, outcomes)

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
            self.failures.append(first)
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

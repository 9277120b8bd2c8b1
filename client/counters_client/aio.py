"""AsyncClient: the asyncio client of a Counters cluster.

`add()` is the fast path: it sums deltas per counter in memory and a flush sends them, one
batch per namespace and coordinator (the first serving replica of the counter's shard, from
GET /v1/topology), each batch with an Idempotency-Key it keeps across its retries, so a
batch is applied once however often it is sent. A flush runs every `flush_interval_ms`,
when `max_batch` counters are pending, and on `flush()` and `close()`; but at most
`max_requests` batches are in flight at once, and a flush takes only the oldest counters it
can send now, so when the cluster is slower than the adds the buffer keeps summing instead
of queueing requests: each op then carries more adds, and the cluster's rate of ops, not
of adds, is what bounds the throughput.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from counters_client import errors
from counters_client.buffer import Coalescer, Entry, Generation
from counters_client.transport import Options, Route, Transport

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


def _path(*parts: str) -> str:
    return "/v1/namespaces/" + "/".join(quote(part, safe="") for part in parts)


class AsyncClient:
    """A client of a Counters cluster.

    nodes: one base URL or a list (seeds; the rest is learnt from GET /v1/topology).
    token: a JWT with counters:read (and counters:write to write); None when auth is off.
    flush_interval_ms: how long add() deltas wait to be summed (default 10).
    max_batch: counters per batch request (at most 1000, the node's limit).
    max_buffer: counters pending or in flight before add() raises BufferFull (or, with
        `await put()`, waits for room).
    max_requests: add() batches in flight at once (default 6); see the module docstring.
    consistency: one, quorum or all for every request (None: the node's default, quorum).
    deadline_s: how long one operation is retried before DeadlineExceeded (default 30).
    request_timeout_s, backoff_base_s, backoff_cap_s: one attempt's bound; the back-off.
    route: send ops to their coordinator (True) or to any node (False: the node forwards).
    listener: called as each add() batch settles (see Listener).
    """

    def __init__(
        self,
        nodes: str | Sequence[str],
        token: str | None = None,
        *,
        flush_interval_ms: float = 10.0,
        max_batch: int = 1000,
        max_buffer: int = 200_000,
        max_requests: int = 6,
        consistency: str | None = None,
        listener: Listener | None = None,
        latency_sample_every: int = 64,
        **options: Any,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch must be 1-1000 (the node's batch limit)")
        if consistency not in (None, "one", "quorum", "all"):
            raise ValueError("consistency must be one, quorum, all or None")
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        self.transport = Transport(seeds, token, Options(**options))
        self.flush_interval_s = flush_interval_ms / 1000
        self.max_batch = max_batch
        self.max_requests = max(1, max_requests)
        self.params = {"consistency": consistency} if consistency else None
        self.listener = listener
        self.buffer = Coalescer(max_buffer, time.perf_counter, latency_sample_every)
        self.stats = Stats()
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.failures: list[errors.CountersError] = []  # not yet raised by flush()
        self._sending: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._closed = False

    # Life -----------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.transport.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        """Flush what is pending, stop, and raise the first failure flush() has not raised."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._drain()
        finally:
            if self._flusher is not None:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
            await self.transport.close()
        self._raise_failures()

    @property
    def buffered(self) -> int:
        """Counters pending or in flight: what max_buffer bounds."""
        return self.buffer.size

    @property
    def topology(self) -> Any:
        return self.transport.topology

    # add() and flushing -------------------------------------------------------------------

    def add(self, namespace: str, name: str, delta: int = 1) -> None:
        """Add `delta` to a counter, soon: summed with other adds of the same counter and
        sent by the next flush. Raises BufferFull when max_buffer counters are unacknowledged,
        InvalidName/InvalidDelta at once for what the node would refuse."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self.buffer.add(namespace, name, delta) >= self.max_batch:
            self._flush_now()

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
        await self._drain()
        self._raise_failures()

    async def _drain(self) -> None:
        self._flush_now()
        while self._sending:
            await asyncio.wait(list(self._sending), return_when=asyncio.FIRST_COMPLETED)
            self._flush_now()  # adds made, or held back, while waiting

    def _raise_failures(self) -> None:
        if self.failures:
            first, self.failures = self.failures[0], []
            raise first

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            self._flush_now()
            if self.transport.stale():
                self.transport.refresh_soon()

    def _flush_now(self) -> None:
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
            self._flush_now()  # a backlog built up while the slots were taken

    def _take(self, limit: int) -> Generation | None:
        return self.buffer.take(limit)

    def _settle(self, entries: int) -> None:
        self.buffer.settle(entries)
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
        try:
            reply = await self._batch_call(namespace, body, route, key=_new_key())
            outcomes = [_op_error(result) for result in reply["results"]]
        except errors.CountersError as error:
            outcomes = [error] * len(ops)
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

    async def _batch_call(
        self, namespace: str, body: bytes, route: Route, key: str | None
    ) -> dict[str, Any]:
        reply: dict[str, Any] = await self.transport.call(
            "POST",
            route,
            _path(namespace) + "/batch",
            body,
            idempotency_key=key,
            params=self.params,
            check=_retryable_op_error,
        )
        return reply

    # One-op and read calls ------------------------------------------------------------------

    async def incr(self, namespace: str, name: str, delta: int = 1) -> int:
        """Add `delta` now; the counter's value once the increment is acknowledged."""
        body = json.dumps({"delta": delta}).encode()
        reply = await self.transport.call(
            "POST",
            self.transport.coordinator_route(namespace, name),
            _path(namespace, "counters", name) + "/increment",
            body,
            idempotency_key=_new_key(),
            params=self.params,
        )
        return int(reply["value"])

    async def get(self, namespace: str, name: str, consistency: str | None = None) -> int:
        reply = await self.transport.call(
            "GET",
            self.transport.coordinator_route(namespace, name),
            _path(namespace, "counters", name),
            params=self._params(consistency),
        )
        return int(reply["value"])

    async def get_many(
        self, namespace: str, names: Iterable[str], consistency: str | None = None
    ) -> dict[str, int]:
        """Many counters' values, read in one batch per coordinator."""
        wanted = list(dict.fromkeys(names))
        topology = self.transport.topology
        groups: dict[Any, list[str]] = {}
        for name in wanted:
            shard = topology.shard_of(namespace, name) if topology is not None else None
            target = topology.coordinator(shard) if topology and shard is not None else None
            groups.setdefault(target, []).append(name)
        chunks = [
            part[start : start + self.max_batch]
            for part in groups.values()
            for start in range(0, len(part), self.max_batch)
        ]
        params = self._params(consistency)
        replies = await asyncio.gather(
            *(self._read_batch(namespace, chunk, params) for chunk in chunks)
        )
        values: dict[str, int] = {}
        for reply in replies:
            values.update(reply)
        return {name: values[name] for name in wanted}

    async def _read_batch(
        self, namespace: str, names: list[str], params: dict[str, str] | None
    ) -> dict[str, int]:
        body = json.dumps({"ops": [{"op": "get", "name": name} for name in names]}).encode()
        reply = await self.transport.call(
            "POST",
            self.transport.coordinator_route(namespace, names[0]),
            _path(namespace) + "/batch",
            body,
            params=params,
            check=_retryable_op_error,
        )
        values = {}
        for result in reply["results"]:
            if "error" in result:
                problem = result["error"]
                raise errors.from_problem(int(problem.get("status", 500)), problem)
            values[result["name"]] = int(result["value"])
        return values

    async def batch(
        self, namespace: str, ops: Sequence[tuple[str, str] | tuple[str, str, int]]
    ) -> list[int | errors.CountersError]:
        """One batch as given, ("increment", name, delta) or ("get", name) each, under one
        Idempotency-Key when it writes; per op, the value or the error the node gave it."""
        if not ops:
            return []
        encoded = []
        for op in ops:
            if op[0] == "increment":
                delta = op[2] if len(op) > 2 else 1
                encoded.append({"op": "increment", "name": op[1], "delta": delta})
            elif op[0] == "get":
                encoded.append({"op": "get", "name": op[1]})
            else:
                raise ValueError(f"an op is ('increment', name, delta) or ('get', name): {op!r}")
        writes = any(op["op"] == "increment" for op in encoded)
        body = json.dumps({"ops": encoded}).encode()
        route = self.transport.coordinator_route(namespace, str(ops[0][1]))
        reply = await self._batch_call(namespace, body, route, _new_key() if writes else None)
        out: list[int | errors.CountersError] = []
        for result in reply["results"]:
            problem = result.get("error")
            if problem is None:
                out.append(int(result["value"]))
            else:
                out.append(errors.from_problem(int(problem.get("status", 500)), problem))
        return out

    async def reset(self, namespace: str, name: str) -> int:
        """Clear what the replicas have observed (increments concurrent with it survive).
        A retried reset may also clear increments made between its attempts."""
        reply = await self.transport.call(
            "DELETE",
            self.transport.coordinator_route(namespace, name),
            _path(namespace, "counters", name),
            params=self.params,
        )
        return int(reply["value"])

    async def history(
        self,
        namespace: str,
        name: str,
        step: str = "minute",
        start: str | float | None = None,
        end: str | float | None = None,
    ) -> dict[str, Any]:
        """The counter's value and delta per step (GET .../history; the node's JSON)."""
        params = {"step": step, **_range(start, end)}
        reply: dict[str, Any] = await self.transport.call(
            "GET", self.transport.any_node, _path(namespace, "counters", name) + "/history",
            params=params,
        )  # fmt: skip
        return reply

    async def rollups(
        self,
        namespace: str,
        period: str = "hour",
        top: int = 10,
        start: str | float | None = None,
        end: str | float | None = None,
    ) -> dict[str, Any]:
        """The namespace's total increase and top counters per period (the node's JSON)."""
        params = {"period": period, "top": str(top), **_range(start, end)}
        reply: dict[str, Any] = await self.transport.call(
            "GET", self.transport.any_node, _path(namespace) + "/rollups", params=params
        )
        return reply

    def _params(self, consistency: str | None) -> dict[str, str] | None:
        return {"consistency": consistency} if consistency else self.params


def _new_key() -> str:
    return "cc-" + secrets.token_hex(12)


def _range(start: str | float | None, end: str | float | None) -> dict[str, str]:
    found = {}
    if start is not None:
        found["from"] = str(start)
    if end is not None:
        found["to"] = str(end)
    return found


def _op_error(result: dict[str, Any]) -> errors.CountersError | None:
    problem = result.get("error")
    if problem is None:
        return None
    return errors.from_problem(int(problem.get("status", 500)), problem)


def _retryable_op_error(reply: Any) -> errors.CountersError | None:
    """A batch answered 200 with an op that failed for a reason a retry can mend (no quorum,
    a timeout): the whole batch is sent again under its key, and the ops that did apply
    answer from their receipts."""
    for result in reply.get("results", ()):
        problem = result.get("error")
        if problem is not None and int(problem.get("status", 500)) >= 500:
            return errors.from_problem(int(problem["status"]), problem)
    return None

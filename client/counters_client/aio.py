"""AsyncClient: the asyncio client of a Counters cluster.

`add()` is the fast path: it sums deltas per counter in memory, and flushes send them in
keyed batches to each counter's coordinator (batcher.py). The other calls send one request
each, to the counter's coordinator (the first serving replica of its shard, from GET
/v1/topology) or, for history and rollups, to any node, retried as transport.py says.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from counters_client import errors
from counters_client.batcher import (
    Batcher,
    Listener,
    Stats,
    new_key,
    path,
    retryable_op_error,
)
from counters_client.buffer import Coalescer
from counters_client.feed import IDLE_TIMEOUT_S, Feed
from counters_client.realtime import Aggregate, Top, Windowed
from counters_client.transport import Options, Transport

__all__ = ["AsyncClient", "Listener", "Stats"]


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
        _lock: threading.Condition | None = None,  # the blocking Client's, see sync.py
        **options: Any,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch must be 1-1000 (the node's batch limit)")
        if consistency not in (None, "one", "quorum", "all"):
            raise ValueError("consistency must be one, quorum, all or None")
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        self.transport = Transport(seeds, token, Options(**options))
        self.max_batch = max_batch
        self.params = {"consistency": consistency} if consistency else None
        self.buffer = Coalescer(max_buffer, time.perf_counter, latency_sample_every)
        self.batcher = Batcher(
            self.transport,
            self.buffer,
            flush_interval_s=flush_interval_ms / 1000,
            max_batch=max_batch,
            max_requests=max_requests,
            params=self.params,
            listener=listener,
            lock=_lock,
        )
        self._flusher: asyncio.Task[None] | None = None
        self._feeds: weakref.WeakSet[Feed] = weakref.WeakSet()  # closed with the client
        self._closed = False

    # Life -----------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.transport.start()
        self._flusher = asyncio.get_running_loop().create_task(self.batcher.flush_loop())

    async def close(self) -> None:
        """Flush what is pending, stop, and raise the first failure flush() has not raised.
        Cut short (a timeout, a cancel), it reports every add it leaves as failed (stats,
        listener): those never sent as NotSent (nothing applied), those in flight as may
        have applied."""
        if self._closed:
            return
        self._closed = True
        self.batcher.close()
        for feed in list(self._feeds):
            await feed.aclose()  # its iteration ends: StopAsyncIteration
        try:
            await self.batcher.drain()
        finally:
            if self._flusher is not None:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
            await self.batcher.abandon()  # cut short (timeout, cancel): each batch reports
            await self.transport.close()
        self.batcher.raise_failures()

    @property
    def buffered(self) -> int:
        """Counters pending or in flight: what max_buffer bounds."""
        return self.buffer.size

    @property
    def topology(self) -> Any:
        return self.transport.topology

    @property
    def stats(self) -> Stats:
        return self.batcher.stats

    @property
    def latencies(self) -> Any:
        """Recent add-to-acknowledged times, in seconds (a deque of every 64th add)."""
        return self.batcher.latencies

    @property
    def failures(self) -> list[errors.CountersError]:
        """Failures of add() batches not yet raised by flush() or close(): the first 16 (the
        rest only counted, in the note of the error flush() raises)."""
        return self.batcher.failures

    # add() and flushing -------------------------------------------------------------------

    def add(self, namespace: str, name: str, delta: int = 1) -> None:
        """Add `delta` to a counter, soon: summed with other adds of the same counter and
        sent by the next flush. Raises BufferFull when max_buffer counters are unacknowledged,
        InvalidName/InvalidDelta at once for what the node would refuse."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self.buffer.add(namespace, name, delta) >= self.max_batch:
            self.batcher.flush_now()

    async def put(self, namespace: str, name: str, delta: int = 1) -> None:
        """add(), waiting for room (up to deadline_s) instead of raising BufferFull."""
        if self._closed:
            raise RuntimeError("the client is closed")
        await self.batcher.put(namespace, name, delta)

    async def flush(self) -> None:
        """Send what is pending and wait until every add made before the call has settled
        (adds made meanwhile are not waited for); raise the first failure
        (DeadlineExceeded, a refusal) since the last flush(), with a note counting the
        others."""
        await self.batcher.flush()

    # One-op and read calls ------------------------------------------------------------------

    async def incr(
        self, namespace: str, name: str, delta: int = 1, idempotency_key: str | None = None
    ) -> int:
        """Add `delta` now; the counter's value once the increment is acknowledged. It goes
        under `idempotency_key`, or a new one; an error names it (`idempotency_key`), so a
        caller can retry one that may have applied without applying it twice."""
        body = json.dumps({"delta": delta}).encode()
        reply = await self.transport.call(
            "POST",
            self.transport.coordinator_route(namespace, name),
            path(namespace, "counters", name) + "/increment",
            body,
            idempotency_key=idempotency_key or new_key(),
            params=self.params,
        )
        return int(reply["value"])

    async def get(self, namespace: str, name: str, consistency: str | None = None) -> int:
        reply = await self.transport.call(
            "GET",
            self.transport.coordinator_route(namespace, name),
            path(namespace, "counters", name),
            params=self._params(consistency),
        )
        return int(reply["value"])

    async def get_window(
        self, namespace: str, name: str, window: str = "15m", consistency: str | None = None
    ) -> Windowed:
        """The counter's value and its net change and rate over a trailing window (1m to
        24h, in m or h: "15m", "2h")."""
        reply = await self.transport.call(
            "GET",
            self.transport.coordinator_route(namespace, name),
            path(namespace, "counters", name),
            params={**(self._params(consistency) or {}), "window": window},
        )
        return Windowed.from_json(reply)

    async def aggregate(
        self, namespace: str, prefix: str = "", window: str | None = None
    ) -> Aggregate:
        """How many counters are under `prefix`, their total and, with a window, their net
        change over it."""
        params = _query(prefix=prefix, window=window)
        reply = await self.transport.call(
            "GET", self.transport.any_node, path(namespace) + "/aggregate", params=params
        )
        return Aggregate.from_json(reply)

    async def top(
        self,
        namespace: str,
        k: int = 10,
        by: str = "value",
        window: str | None = None,
        prefix: str = "",
    ) -> Top:
        """The k counters (up to 1,000) with the largest value, or (by="change", which
        needs a window) the largest net change over the window; largest first."""
        params = _query(prefix=prefix, window=window, k=str(k), by=by)
        reply = await self.transport.call(
            "GET", self.transport.any_node, path(namespace) + "/top", params=params
        )
        return Top.from_json(reply)

    def events(
        self,
        namespace: str,
        prefix: str = "",
        last_event_id: str | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> Feed:
        """The namespace's change feed (counters under `prefix`) from now, or from after
        `last_event_id`: an async iterator of ChangeEvent and Gap that reconnects, to any
        node, where it left off (see feed.py). Opens on the first `async for` step; close
        it with `await feed.aclose()` or `async with client.events(...) as feed`; closing
        the client ends it too."""
        if self._closed:
            raise RuntimeError("the client is closed")
        feed = Feed(
            self.transport, path(namespace) + "/events", prefix, last_event_id, idle_timeout_s
        )
        self._feeds.add(feed)
        return feed

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
            path(namespace) + "/batch",
            body,
            params=params,
            check=retryable_op_error,
        )
        values = {}
        for result in reply["results"]:
            if "error" in result:
                problem = result["error"]
                raise errors.from_problem(int(problem.get("status", 500)), problem)
            values[result["name"]] = int(result["value"])
        return values

    async def batch(
        self,
        namespace: str,
        ops: Sequence[tuple[str, str] | tuple[str, str, int]],
        idempotency_key: str | None = None,
    ) -> list[int | errors.CountersError]:
        """One batch as given, ("increment", name, delta) or ("get", name) each, under one
        Idempotency-Key when it writes (`idempotency_key`, or a new one, which an error
        names); per op, the value or the error the node gave it."""
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
        key = (idempotency_key or new_key()) if writes else None
        reply = await self.batcher.batch_call(namespace, body, route, key)
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
            path(namespace, "counters", name),
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
            "GET", self.transport.any_node, path(namespace, "counters", name) + "/history",
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
            "GET", self.transport.any_node, path(namespace) + "/rollups", params=params
        )
        return reply

    def _params(self, consistency: str | None) -> dict[str, str] | None:
        return {"consistency": consistency} if consistency else self.params


def _query(**given: str | None) -> dict[str, str]:
    """The query parameters given, without the empty ones."""
    return {key: value for key, value in given.items() if value}


def _range(start: str | float | None, end: str | float | None) -> dict[str, str]:
    found = {}
    if start is not None:
        found["from"] = str(start)
    if end is not None:
        found["to"] = str(end)
    return found

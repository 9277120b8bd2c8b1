"""Requests to the cluster: routing by topology, retries within a deadline, the map's upkeep.

One request is sent to the node a `Route` picks; a connection error, a timeout, 502, 503 or
504 makes it try again, with the same body and the same Idempotency-Key (so a write that
did apply is answered from its receipt, not applied twice), after an exponential back-off
with jitter, to the next replica when the first did not answer; 429 waits for its
Retry-After (a 429 without one is final: the request is larger than the tenant's burst,
and the add() path splits such a batch, batcher.py). Every answer carries the node's ring
epoch (Counters-Ring-Epoch): a newer one than the map's makes the map be fetched again,
from that node, in the background.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from counters_client import errors, retry
from counters_client.topology import Topology

log = logging.getLogger("counters_client")

EPOCH_HEADER = "Counters-Ring-Epoch"
TRANSITION_INTERVAL_S = 1.0
# A route: given the node ids to avoid, the base URL to send to.
Route = Callable[[frozenset[str]], str]
# Checks a 2xx answer; returns a retryable error to try the same request again.
Check = Callable[[Any], errors.CountersError | None]


@dataclass(frozen=True)
class Options:
    """How the client talks to the cluster (see AsyncClient for each one's meaning)."""

    deadline_s: float = 30.0
    request_timeout_s: float = 10.0
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    suspect_s: float = 1.0
    topology_interval_s: float = 5.0
    max_connections: int = 64
    route: bool = True


@dataclass
class Tally:
    """Request counts, for the caller's own metrics."""

    requests: int = 0
    retries: int = 0
    topology_refreshes: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)  # base URL -> requests


class Transport:
    """The HTTP session, the current topology and the retry loop."""

    def __init__(self, seeds: list[str], token: str | None, options: Options) -> None:
        if not seeds:
            raise ValueError("at least one node URL is needed")
        self.seeds = [seed.rstrip("/") for seed in seeds]
        self.options = options
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.topology: Topology | None = None
        self.tally = Tally()
        self.session: aiohttp.ClientSession | None = None
        self._suspects: dict[str, float] = {}  # node id -> monotonic time it stays avoided
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._any = itertools.cycle(range(1 << 30))
        self._random = random.Random()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.options.max_connections)
        self.session = aiohttp.ClientSession(connector=connector)
        if self.options.route:
            try:
                await self.refresh()
            except BaseException:
                await self.session.close()  # a bad token: nothing of this client stays open
                raise

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    # Routing --------------------------------------------------------------------------------

    def suspects(self) -> frozenset[str]:
        if not self._suspects:
            return frozenset()
        now = time.monotonic()
        for node_id in [n for n, until in self._suspects.items() if until <= now]:
            del self._suspects[node_id]
        return frozenset(self._suspects)

    def any_node(self, avoid: frozenset[str]) -> str:
        """A serving node, in turn; a seed when no map is known yet."""
        topology = self.topology
        urls = self.seeds
        if topology is not None and self.options.route:
            serving = topology.serving_urls()
            chosen = [url for url in serving if topology.node_of(url) not in avoid]
            urls = chosen or serving or self.seeds
        return urls[next(self._any) % len(urls)]

    def coordinator_route(self, namespace: str, name: str) -> Route:
        """The route of ops on this counter: its shard's coordinator, by the map current at
        each attempt."""

        def route(avoid: frozenset[str]) -> str:
            topology = self.topology
            if topology is None or not self.options.route:
                return self.any_node(avoid)
            shard = topology.shard_of(namespace, name)
            found = topology.coordinator(shard, avoid | self.suspects())
            return found or self.any_node(avoid)

        return route

    # Topology -------------------------------------------------------------------------------

    async def refresh(self, first: str | None = None) -> None:
        """Fetch the map from `first`, else from known nodes and the seeds in turn; keep the
        one with the highest epoch seen. A failure leaves the old map."""
        assert self.session is not None
        known = list(self.topology.serving_urls()) if self.topology is not None else []
        candidates = list(dict.fromkeys([*([first] if first else []), *known, *self.seeds]))
        timeout = aiohttp.ClientTimeout(total=self.options.request_timeout_s)
        for url in candidates:
            try:
                async with self.session.get(
                    url + "/v1/topology", headers=self.headers, timeout=timeout
                ) as response:
                    if response.status != 200:
                        raise errors.from_problem(response.status, await _json(response))
                    body = await response.json(content_type=None)
                found = Topology.from_json(body, url)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                log.debug("topology from %s failed: %r", url, error)
                continue
            except (errors.Unauthorized, errors.Forbidden):
                raise  # a bad token: no other node will answer better
            except errors.CountersError:
                continue  # not ready, or a node too old to serve /v1/topology
            current = self.topology
            if current is None or found.epoch >= current.epoch:
                if current is not None and (found.shards, found.tenant) == (
                    current.shards,
                    current.tenant,
                ):
                    found._shard_cache.update(current._shard_cache)
                self.topology = found
            self.tally.topology_refreshes += 1
            self._refreshed_at = time.monotonic()
            return
        log.warning("no node answered GET /v1/topology; routing by the old map or the seeds")

    def refresh_soon(self, first: str | None = None) -> None:
        """Fetch the map again in the background, unless a fetch is under way."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_quietly(first))

    async def _refresh_quietly(self, first: str | None) -> None:
        try:
            await self.refresh(first)
        except errors.CountersError as error:
            log.warning("topology refresh refused: %s", error)

    def stale(self) -> bool:
        """Due for a fetch: every topology_interval_s, and every TRANSITION_INTERVAL_S while
        a member is joining, leaving or down (its status moves without a new epoch)."""
        if not self.options.route:
            return False
        interval = self.options.topology_interval_s
        topology = self.topology
        if topology is not None and any(s != "up" for s in topology.status.values()):
            interval = min(interval, TRANSITION_INTERVAL_S)
        return time.monotonic() - self._refreshed_at > interval

    def _saw(self, url: str, headers: Mapping[str, str]) -> None:
        raw = headers.get(EPOCH_HEADER)
        topology = self.topology
        if raw is None or topology is None:
            return
        try:
            epoch = int(raw)
        except ValueError:
            return
        if epoch > topology.epoch:
            self.refresh_soon(url)

    def _suspect(self, url: str) -> str | None:
        node_id = self.topology.node_of(url) if self.topology is not None else None
        if node_id is not None:
            self._suspects[node_id] = time.monotonic() + self.options.suspect_s
        return node_id

    # Requests -------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        route: Route,
        path: str,
        body: bytes | None = None,
        idempotency_key: str | None = None,
        params: Mapping[str, str] | None = None,
        check: Check | None = None,
    ) -> Any:
        """The JSON of a 2xx answer, trying again as the module docstring says; a typed
        error for a final refusal, DeadlineExceeded when the deadline runs out."""
        assert self.session is not None, "use the client as an async context manager"
        options = self.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.deadline_s
        headers = self.headers
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        avoid: set[str] = set()
        last: errors.CountersError | None = None
        maybe = False  # an attempt so far may have applied (errors.py)
        answered: Any = None  # the last 2xx answer `check` refused
        for attempt in itertools.count():
            remaining = deadline - loop.time()
            url = route(frozenset(avoid))
            retry_after = None
            try:
                status, payload, retry_after = await self._attempt(
                    method, url + path, body, headers, params, remaining
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                last = errors.ConnectionFailed(f"{method} {url}{path}: {error!r}")
                node_id = self._suspect(url)
                if node_id is not None:
                    avoid.add(node_id)
                self.refresh_soon()
            else:
                if status < 300:
                    last = check(payload) if check is not None else None
                    if last is None:
                        return payload
                    answered = payload  # some of its ops applied
                else:
                    last = errors.from_problem(status, payload)
                    if not retry.retryable(status, retry_after):
                        raise _settled(last, maybe, idempotency_key, answered)
                    if isinstance(last, errors.NotReady):
                        node_id = self._suspect(url)
                        if node_id is not None:
                            avoid.add(node_id)
            maybe = maybe or last.may_have_applied
            log.debug("%s %s%s attempt %d: %r", method, url, path, attempt + 1, last)
            wait = retry.next_wait_s(
                attempt,
                retry_after,
                deadline - loop.time(),
                options.backoff_base_s,
                options.backoff_cap_s,
                self._random.random(),
            )
            if wait is None:
                gave_up = errors.DeadlineExceeded(
                    f"{method} {path}: no success in {attempt + 1} attempts within "
                    f"{options.deadline_s:g} s; last: {last}",
                    last,
                )
                raise _settled(gave_up, maybe, idempotency_key, answered)
            self.tally.retries += 1
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _attempt(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        remaining_s: float,
    ) -> tuple[int, Any, float | None]:
        """One request: its status, JSON body and Retry-After."""
        assert self.session is not None
        base = url.split("/v1/", 1)[0]
        tally = self.tally
        tally.requests += 1
        tally.in_flight[base] = tally.in_flight.get(base, 0) + 1
        seconds = max(0.01, min(self.options.request_timeout_s, remaining_s))
        try:
            async with self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                payload = await _json(response)
                self._saw(base, response.headers)
                retry_after = retry.retry_after_s(response.headers.get("Retry-After"))
                return response.status, payload, retry_after
        finally:
            tally.in_flight[base] -= 1


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"detail": raw[:500].decode("utf-8", "replace")}


def _settled(
    error: errors.CountersError, maybe: bool, idempotency_key: str | None, answered: Any
) -> errors.CountersError:
    """The error a call raises: it names the call's key and the last answer it refused,
    and may have applied if any of its attempts may have (an answer with ops applied
    among them)."""
    error.earlier_may_have_applied = maybe or answered is not None
    error.unanswered_may_have_applied = maybe
    error.idempotency_key = idempotency_key
    error.reply = answered
    return error

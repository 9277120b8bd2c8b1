"""Locust users for Counters: app servers that count and read, dashboards that read history.

    export COUNTERS_JWT_SECRET=...   # the nodes' --jwt-secret; unset for nodes run with --auth none
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s \\
        --host http://127.0.0.1:7000

- `AppServer` (weight 5, no think time): single increments on uniform and on Zipf-skewed keys,
  quorum reads of Zipf keys, and batches of increments, like a backend counting views.
- `Dashboard` (weight 1, 1-2 s between looks): a namespace's hourly rollups, then the
  per-minute history of its hottest counters.
- `Watcher` (weight 1, 0.5-1 s between looks): the real-time view (issue 14): the top 10 by
  change over the last hour, the namespace's aggregate over 15 minutes, and the windowed
  reads of the top three.
- `ClientAppServer` (weight 5, no think time; locust_client.py): the same backend counting
  through the Python client (counters_client): buffered add()s, whose samples are the
  times from add() to acknowledged, and incr(), get() and get_many() routed to each
  counter's coordinator. One Client per Locust process, shared by these users, acting for
  the first tenant (locust_client.py says why one).
- `FeedListener` (weight 1): follows the namespace's change feed (SSE) for a few seconds at a
  time, then reconnects with Last-Event-ID, as a browser's EventSource does. Each change
  received is a request named "SSE change (lag)" whose time is its lag: from when the
  node published it to when it arrived; "SSE connect" times the stream's opening. A gap or
  a cut-off is a failure.

Each user acts for one tenant of --counters-tenants, in turn, with a token minted from
COUNTERS_JWT_SECRET (HS256, scopes counters:read and counters:write, re-minted before it
expires). Without the variable no Authorization header is sent, and every request lands in
the `default` tenant of a node run with --auth none.

Every counter lives in --counters-namespace (default: `load-` plus the start time and a random
suffix, so runs never add to each other's counters); keys are k0 to k<keys - 1>. Requests are
named by route template, so Locust's statistics are per route, not per key.

A 429 is a failure unless --counters-allow-429 is given. One Locust process sends each tenant
far less than the default limit (100,000 operations a second per tenant on each node), so a
429 means the limits are lower than this load, and counting cheap refusals as served would
inflate the figures. A run that means to push tenants into their limits gives the flag: a 429
with Retry-After is then a success, counted under the route's name plus "(429 allowed)", and
the user waits as told before its next request. loadtest/README.md has more, and figures.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import os
import random
import secrets
import time
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, between, constant, events, task
from locust.env import Environment
from locust_client import ClientAppServer
from zipf import cumulative, rank

from node.http.auth import READ, WRITE, mint

INCREMENT = "/v1/namespaces/{namespace}/counters/{name}/increment"
COUNTER = "/v1/namespaces/{namespace}/counters/{name}"
BATCH = "/v1/namespaces/{namespace}/batch"
HISTORY = "/v1/namespaces/{namespace}/counters/{name}/history"
ROLLUPS = "/v1/namespaces/{namespace}/rollups"
TOP = "/v1/namespaces/{namespace}/top"
AGGREGATE = "/v1/namespaces/{namespace}/aggregate"
WINDOWED = "/v1/namespaces/{namespace}/counters/{name}?window"
EVENTS = "/v1/namespaces/{namespace}/events"
FEED_HOLD_S = 5.0  # a listener reconnects (with Last-Event-ID) after this long
IDLE_S = 1.0  # or after this long without a byte (heartbeats come every 15 s)
TOKEN_TTL_S = 3600
HISTORY_SPAN_S = 600  # dashboards chart the last ten minutes, one point a minute
MAX_BACKOFF_S = 10.0
log = logging.getLogger("counters.locust")
__all__ = ["AppServer", "ClientAppServer", "Dashboard", "FeedListener", "Watcher"]

_user_numbers = itertools.count()  # spreads this process's users over the tenants in turn


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--counters-namespace",
        env_var="COUNTERS_LOCUST_NAMESPACE",
        default="",
        help="namespace of every counter (default: load-<start time>-<random>)",
    )
    parser.add_argument(
        "--counters-tenants",
        env_var="COUNTERS_LOCUST_TENANTS",
        default="acme,globex,initech",
        help="comma-separated tenants the users act for, in turn",
    )
    parser.add_argument(
        "--counters-keys",
        type=int,
        env_var="COUNTERS_LOCUST_KEYS",
        default=10_000,
        help="counters per namespace: k0 to k<keys - 1>",
    )
    parser.add_argument(
        "--counters-zipf-s",
        type=float,
        env_var="COUNTERS_LOCUST_ZIPF_S",
        default=1.1,
        help="Zipf exponent of skewed keys (k0 is the hottest)",
    )
    parser.add_argument(
        "--counters-batch-size",
        type=int,
        env_var="COUNTERS_LOCUST_BATCH_SIZE",
        default=20,
        help="increments per batch request",
    )
    parser.add_argument(
        "--counters-allow-429",
        action="store_true",
        env_var="COUNTERS_LOCUST_ALLOW_429",
        help="count a 429 with Retry-After as a success and wait as told",
    )


@events.init.add_listener
def _name_the_run(environment: Environment, **_: Any) -> None:
    # Workers of a distributed run take the master's options, this namespace included.
    options = environment.parsed_options
    if options is not None and not options.counters_namespace:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        options.counters_namespace = f"load-{stamp}-{secrets.token_hex(2)}"


@events.init.add_listener
def _fresh_clock(**_: Any) -> None:
    # gevent's hub caches its loop's time, and does not run while Locust loads this file and
    # what it imports: seconds on a busy machine. --run-time's timer, set right after,
    # would count from that stale time and end a 4 s run at once (as it did, 5-8 s stale).
    gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def _say_where(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if os.environ.get("COUNTERS_JWT_SECRET"):
        who = f"tenants {options.counters_tenants} (tokens from COUNTERS_JWT_SECRET)"
    else:
        who = "no tokens (COUNTERS_JWT_SECRET is not set; the nodes need --auth none)"
    log.info("counters: namespace %s, %s", options.counters_namespace, who)


@cache
def _zipf_table(count: int, s: float) -> list[float]:
    return cumulative(count, s)


class CountersUser(FastHttpUser):
    abstract = True
    host = "http://127.0.0.1:7000"  # `make run`'s first node; --host overrides it
    network_timeout = 10.0  # seconds; a node answers or gives up (504) well before
    connection_timeout = 5.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None, "run this file with the locust command"
        self.namespace: str = options.counters_namespace
        self.keys: int = options.counters_keys
        self.zipf_s: float = options.counters_zipf_s
        self.batch_size: int = options.counters_batch_size
        self.allow_429: bool = options.counters_allow_429
        tenants = [t.strip() for t in options.counters_tenants.split(",") if t.strip()]
        self.tenant = tenants[next(_user_numbers) % len(tenants)]
        self.secret = os.environ.get("COUNTERS_JWT_SECRET", "")
        self.token, self.token_expires = "", 0.0

    def headers(self) -> dict[str, str]:
        if not self.secret:
            return {}
        if time.time() > self.token_expires - 60:
            self.token = mint(self.secret, self.tenant, [READ, WRITE], TOKEN_TTL_S, None)
            self.token_expires = time.time() + TOKEN_TTL_S
        return {"Authorization": f"Bearer {self.token}"}

    def uniform_key(self) -> str:
        return f"k{random.randrange(self.keys)}"

    def zipf_key(self) -> str:
        return f"k{rank(_zipf_table(self.keys, self.zipf_s), random.random())}"

    def url(self, template: str, name: str = "") -> str:
        return template.format(namespace=self.namespace, name=name)

    def call(self, method: str, path: str, route: str, **kwargs: Any) -> Any:
        """Send one request named `route`; the JSON body of a 200, else None (and the
        request is marked failed, or as an allowed 429 after waiting out Retry-After)."""
        with self.client.request(
            method, path, name=route, headers=self.headers(), catch_response=True, **kwargs
        ) as response:
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    response.failure("HTTP 200 without a JSON body")
                    return None
                errors = [r["error"] for r in body.get("results", ()) if "error" in r]
                if errors:  # a batch answers 200 and reports each failed op in its results
                    response.failure(f"{len(errors)} batch op(s) failed: {_kind(errors[0])}")
                    return None
                response.success()
                return body
            retry_after = response.headers.get("Retry-After") if response.headers else None
            if response.status_code == 429 and self.allow_429 and retry_after:
                # A line of its own in the statistics: refusals are counted, not hidden.
                response.request_meta["name"] = f"{route} (429 allowed)"
                response.success()
                time.sleep(min(float(retry_after), MAX_BACKOFF_S))
                return None
            response.failure(f"HTTP {response.status_code} {_problem_kind(response)}")
            return None


def _kind(problem: Any) -> str:
    """The stable last part of a problem's type, e.g. quorum-unavailable."""
    return str(problem.get("type", "?")).rsplit("/", 1)[-1] if isinstance(problem, dict) else "?"


def _problem_kind(response: Any) -> str:
    try:
        return _kind(response.json())
    except Exception:  # not JSON: a proxy's page, or no answer at all
        return str(response.error or "")


class AppServer(CountersUser):
    """A backend that counts as fast as it is answered."""

    weight = 5
    wait_time = constant(0)

    @task(3)
    def increment_uniform(self) -> None:
        path = self.url(INCREMENT, self.uniform_key())
        self.call("POST", path, f"{INCREMENT} (uniform)", json={"delta": 1})

    @task(3)
    def increment_zipf(self) -> None:
        path = self.url(INCREMENT, self.zipf_key())
        self.call("POST", path, f"{INCREMENT} (zipf)", json={"delta": 1})

    @task(3)
    def read(self) -> None:
        self.call("GET", self.url(COUNTER, self.zipf_key()), COUNTER)

    @task(1)
    def batch(self) -> None:
        ops = [{"op": "increment", "name": self.zipf_key()} for _ in range(self.batch_size)]
        self.call("POST", self.url(BATCH), BATCH, json={"ops": ops})


class Dashboard(CountersUser):
    """A person watching the namespace: its top counters, then each one's recent history."""

    weight = 1
    wait_time = between(1, 2)

    @task
    def look(self) -> None:
        rollups = self.call("GET", self.url(ROLLUPS) + "?period=hour&top=3", ROLLUPS)
        latest = rollups["rollups"][-1]["top"] if rollups and rollups["rollups"] else []
        names = [entry["name"] for entry in latest] or [self.zipf_key() for _ in range(3)]
        now = int(time.time())
        for name in names:
            query = f"?from={now - HISTORY_SPAN_S}&to={now + 1}&step=minute"  # to: exclusive
            self.call("GET", self.url(HISTORY, name) + query, HISTORY)


class Watcher(CountersUser):
    """A live view: what is hot right now, and how fast each of those is moving."""

    weight = 1
    wait_time = between(0.5, 1)

    @task
    def look(self) -> None:
        top = self.call("GET", self.url(TOP) + "?k=10&by=change&window=1h", TOP)
        self.call("GET", self.url(AGGREGATE) + "?window=15m", AGGREGATE)
        names = [entry["name"] for entry in top["top"][:3]] if top else []
        for name in names or [self.zipf_key()]:
            self.call("GET", self.url(COUNTER, name) + "?window=15m", WINDOWED)


class FeedListener(CountersUser):
    """A service that follows the namespace's changes as server-sent events."""

    weight = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        self.last_event_id = ""

    @task
    def follow(self) -> None:
        where = urlsplit(self.host)
        # http.client, not the pooled FastHttp client: a stream is closed mid-body on
        # purpose, and its connection must not go back to a pool (gevent makes it cooperative).
        connection = http.client.HTTPConnection(
            where.hostname or "127.0.0.1", where.port or 80, timeout=self.network_timeout
        )
        headers = self.headers()
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        started = time.perf_counter()
        try:
            connection.request("GET", self.url(EVENTS), headers=headers)
            response = connection.getresponse()
            self._report("SSE connect", started, None if response.status == 200 else
                         f"HTTP {response.status}")  # fmt: skip
            if response.status == 200 and connection.sock is not None:
                # An idle stream (no change for a while) ends the hold early, so that a
                # listener never blocks a stopping run for longer than this.
                connection.sock.settimeout(IDLE_S)
                with contextlib.suppress(TimeoutError):
                    self._read(response, time.monotonic() + FEED_HOLD_S)
        except OSError as error:  # a timeout while idle, a node that went away
            self._report("SSE connect", started, f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    def _read(self, response: http.client.HTTPResponse, until: float) -> None:
        event: dict[str, str] = {}
        while time.monotonic() < until:
            line = response.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line:
                field, _, value = line.partition(": ")
                event[field] = value
                continue
            if event.get("event") == "change":
                self.last_event_id = event.get("id", self.last_event_id)
                at = datetime.fromisoformat(json.loads(event["data"])["at"]).timestamp()
                self._report("SSE change (lag)", time.perf_counter() - (time.time() - at), None)
            elif event.get("event") in ("gap", "cutoff"):
                self._report(f"SSE {event['event']}", time.perf_counter(), event.get("data"))
            event = {}

    def _report(self, name: str, started: float, failure: str | None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=max(0.0, (time.perf_counter() - started) * 1000),
            response_length=0,
            exception=None if failure is None else Exception(failure),
            context={},
        )

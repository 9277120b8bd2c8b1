"""Locust users that count through counters-client, as an application would (issue 15).

locustfile.py imports `ClientAppServer` (and so runs it beside its HTTP users); it reads the
options locustfile.py declares, so run it through that file:

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s ClientAppServer

Why one blocking `Client` per Locust process, shared by its ClientAppServer users: Locust
monkey-patches the process with gevent, so `threading.Thread` makes a greenlet, and every
"thread" is a greenlet of the one OS thread. asyncio keeps its running loop per OS thread,
so the loop of a second Client refuses to start ("RuntimeError: Cannot run the event loop
while another loop is running"): a Client per user is not possible. One Client is sound:
its loop runs in its greenlet and waits in gevent's selector (the patched `selectors`), its
blocking calls wait on gevent's patched locks, so the users' calls and the client's flushes
take turns like any other greenlets. It is also what an application server does: one client
per process, shared by its request handlers, whose adds of the same counter it sums. The
cost is the client's CPU per call, 1.3-1.4x what it is without gevent (the loop's wake-ups
go through gevent's hub), in the Locust process only (bench_client_gevent.py measures it).

Each call is a Locust request of type "client": its time is the call's, its failure the
typed `CountersError`. add() returns at once, so its sample is taken when the batch that
carries it settles: the time from add() to the acknowledgement (the issue's latency), one
sample per add() call, a failure for each add given up (a refusal, or the deadline). The
client retries 5xx, timeouts and 429 itself, so those show as latency, not failures. Adds
still buffered when the run stops are flushed (and reported) before Locust's statistics end.

The shared client acts for one tenant, the first of --counters-tenants (its token, minted
from COUNTERS_JWT_SECRET, lasts TOKEN_TTL_S; a client's token is fixed for its life).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from functools import cache
from typing import Any

from counters_client import Client, CountersError
from locust import User, constant, events, task
from locust.env import Environment
from zipf import cumulative, rank

from node.http.auth import READ, WRITE, mint

REQUEST_TYPE = "client"
ADD = "add() -> acknowledged (zipf)"
INCR = "incr() (zipf)"
GET = "get() (zipf)"
GET_MANY = "get_many() (zipf)"
ADDS_PER_TASK = 10  # one page view counts a few things
GET_MANY_SIZE = 10
TOKEN_TTL_S = 24 * 3600
log = logging.getLogger("counters.locust")


class SharedClient:
    """The process's one Client, and the add() times not yet acknowledged, per counter."""

    def __init__(self, environment: Environment, host: str, namespace: str) -> None:
        self.environment = environment
        self.namespace = namespace
        # name -> times of its add() calls not yet settled, oldest first
        self.added: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        options = environment.parsed_options
        assert options is not None
        tenants = [t.strip() for t in options.counters_tenants.split(",") if t.strip()]
        secret = os.environ.get("COUNTERS_JWT_SECRET", "")
        token = mint(secret, tenants[0], [READ, WRITE], TOKEN_TTL_S, None) if secret else None
        self.client = Client(host, token, listener=self._settled)

    def add(self, name: str) -> None:
        times = self.added[name]
        times.append(time.perf_counter())  # before add(): its batch cannot settle first
        try:
            self.client.add(self.namespace, name)
        except CountersError as error:
            times.pop()
            self.report(ADD, 0.0, error)

    def _settled(self, namespace: str, settled: list[Any]) -> None:
        """The client's listener (it runs on the client's loop): one sample per add()."""
        now = time.perf_counter()
        try:
            for name, _, adds, error in settled:
                times = self.added.get(name)
                for _ in range(adds):
                    added = times.popleft() if times else now
                    self.report(ADD, (now - added) * 1000, error)
                if times is not None and not times:
                    del self.added[name]
        except Exception:  # a listener must not break the client's flushes
            log.exception("reporting a settled add() batch failed")

    def report(self, name: str, response_time_ms: float, error: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=response_time_ms,
            response_length=0,
            exception=error,
            context={},
        )

    def call(self, name: str, method: Any, *args: Any) -> Any:
        """method(*args), reported as a request named `name`; its result, None on failure."""
        started = time.perf_counter()
        try:
            result = method(*args)
        except CountersError as error:
            self.report(name, (time.perf_counter() - started) * 1000, error)
            return None
        self.report(name, (time.perf_counter() - started) * 1000, None)
        return result

    def close(self) -> None:
        """Flush (reporting every add() still buffered) and stop the client's loop."""
        try:
            self.client.close()
        except CountersError as error:  # each failed add() is a failure in the statistics
            log.warning("counters: the client's last flush failed: %s", error)


@cache
def _zipf_table(count: int, s: float) -> list[float]:
    return cumulative(count, s)


_shared: SharedClient | None = None
_creating = threading.Lock()  # gevent's, once Locust has patched threading


def shared_client(user: User) -> SharedClient:
    global _shared
    with _creating:  # Client() waits for the topology: other users wait for the same one
        if _shared is None:
            options = user.environment.parsed_options
            assert options is not None, "run this file with the locust command"
            host = user.host or "http://127.0.0.1:7000"
            _shared = SharedClient(user.environment, host, options.counters_namespace)
            log.info("counters: the client users share a Client of %s", host)
        return _shared


@events.test_stop.add_listener
def _flush_the_client(environment: Environment, **_: Any) -> None:
    # test_stop comes after the users stopped and before the statistics are final (a
    # worker sends its last report after it), so every add() made is counted.
    global _shared
    if _shared is not None:
        shared, _shared = _shared, None
        shared.close()


class ClientAppServer(User):
    """A backend that counts through the Python client: buffered adds, acknowledged single
    increments, and reads routed to each counter's coordinator."""

    weight = 5
    wait_time = constant(0)
    host = "http://127.0.0.1:7000"

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None, "run this file with the locust command"
        self.table = _zipf_table(options.counters_keys, options.counters_zipf_s)
        self.shared = shared_client(self)

    def zipf_key(self) -> str:
        return f"k{rank(self.table, random.random())}"

    @task(3)
    def add(self) -> None:
        for _ in range(ADDS_PER_TASK):
            self.shared.add(self.zipf_key())

    @task(3)
    def incr(self) -> None:
        shared = self.shared
        shared.call(INCR, shared.client.incr, shared.namespace, self.zipf_key())

    @task(3)
    def get(self) -> None:
        shared = self.shared
        shared.call(GET, shared.client.get, shared.namespace, self.zipf_key())

    @task(1)
    def get_many(self) -> None:
        shared = self.shared
        names = [self.zipf_key() for _ in range(GET_MANY_SIZE)]
        shared.call(GET_MANY, shared.client.get_many, shared.namespace, names)

"""Concurrent clients at every consistency level, recording what became of each op.

Each client sends increments of a seeded signed delta to the nodes in turn, plain or with an
`Idempotency-Key` of its own per op (never retried here: tests/faults/retries.py retries).
Every op is recorded with one Outcome:

- OK: a 2xx; the delta is in the counter.
- FAILED: certainly not applied: a 4xx, a 503 saying `"may_have_applied": false`, or a
  connection that could not be made (nothing was sent).
- UNKNOWN: may or may not apply: a timeout, a 504, another 5xx, a 503 that may have applied,
  a connection lost after the request went out.

The checker bounds each counter by [OK + UNKNOWN negatives, OK + UNKNOWN positives].
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.cluster.harness import Node

LEVELS = ("one", "quorum", "all")
NAMESPACE = "faults"
CLIENT_TIMEOUT_S = 4.0  # seconds a client waits for an answer (the nodes' own limit is 2 s)
PAUSE_AFTER_FAILURE_S = 0.05  # a failing client does not spin
PACE_S = 0.01  # between two ops of one client: a steady load that leaves the CPU to the nodes


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class OpRecord:
    sent: float  # time.monotonic() when sent
    done: float  # when its answer (or error) came
    node: str  # the node id it was sent to
    level: str  # one, quorum, all
    keyed: bool
    name: str  # counter name in NAMESPACE
    delta: int
    outcome: Outcome
    status: int | None  # HTTP status, None for a connection error or timeout
    detail: str = ""  # the problem type or the error, for failures worth showing


def classify(status: int, body: Any) -> Outcome:
    """The outcome of an answered request (pure; see the module docstring)."""
    if 200 <= status < 300:
        return Outcome.OK
    if 400 <= status < 500:
        return Outcome.FAILED
    if status == 503 and isinstance(body, dict) and body.get("may_have_applied") is False:
        return Outcome.FAILED
    return Outcome.UNKNOWN


def counter_names(level: str, keyed: bool, per_kind: int = 2) -> list[str]:
    kind = "keyed" if keyed else "plain"
    return [f"{level}-{kind}-{i}" for i in range(per_kind)]


class Clients:
    """One plain and one keyed client per consistency level, each cycling over the nodes."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        nodes: list[Node],
        seed: int,
        clients_per_kind: int = 1,
    ) -> None:
        self.session = session
        self.nodes = nodes
        self.seed = seed
        self.clients_per_kind = clients_per_kind
        self.records: list[OpRecord] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def names(self) -> list[str]:
        return [
            n for level in LEVELS for keyed in (False, True) for n in counter_names(level, keyed)
        ]

    def start(self) -> None:
        index = 0
        for level in LEVELS:
            for keyed in (False, True):
                for _ in range(self.clients_per_kind):
                    rng = random.Random(f"{self.seed}/{index}")
                    self._tasks.append(asyncio.create_task(self._client(index, level, keyed, rng)))
                    index += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, index: int, level: str, keyed: bool, rng: random.Random) -> None:
        names = counter_names(level, keyed)
        step = index
        while not self._stop.is_set():
            step += 1
            node = self.nodes[step % len(self.nodes)]
            name = names[rng.randrange(len(names))]
            delta = rng.choice((-3, -2, -1, 1, 2, 3, 4, 5))
            record = await send(self.session, node, level, name, delta, keyed)
            self.records.append(record)
            ok = record.outcome is Outcome.OK
            await asyncio.sleep(PACE_S if ok else PAUSE_AFTER_FAILURE_S)


async def send(
    session: aiohttp.ClientSession,
    node: Node,
    level: str,
    name: str,
    delta: int,
    keyed: bool,
    key: str | None = None,
) -> OpRecord:
    """One increment, never raising: its OpRecord. `key` (or a fresh one when keyed) goes in
    the Idempotency-Key header."""
    path = f"/v1/namespaces/{NAMESPACE}/counters/{name}/increment?consistency={level}"
    headers = {}
    if keyed:
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    sent = time.monotonic()
    status: int | None = None
    detail = ""
    try:
        async with session.post(
            node.url + path,
            json={"delta": delta},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
        ) as response:
            status = response.status
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
        outcome = classify(status, body)
        if outcome is not Outcome.OK and isinstance(body, dict):
            detail = str(body.get("type") or body.get("title") or "")
    except aiohttp.ClientConnectorError as error:
        outcome, detail = Outcome.FAILED, f"connect: {error.os_error}"  # nothing was sent
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        outcome, detail = Outcome.UNKNOWN, type(error).__name__
    return OpRecord(
        sent, time.monotonic(), node.node_id, level, keyed, name, delta, outcome, status, detail
    )


def bounds(records: list[OpRecord], name: str) -> tuple[int, int]:
    """[acknowledged + unknown negatives, acknowledged + unknown positives] of one counter."""
    acked = sum(r.delta for r in records if r.name == name and r.outcome is Outcome.OK)
    unknown = [r.delta for r in records if r.name == name and r.outcome is Outcome.UNKNOWN]
    return acked + sum(d for d in unknown if d < 0), acked + sum(d for d in unknown if d > 0)

"""A stream of concurrent increments over a cluster's nodes, with exact bookkeeping of what was
acknowledged, refused and left ambiguous, so a test can bound every total after faults."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.cluster.harness import Cluster, Node
from tests.support import eventually


class WriteStream:
    """Concurrent increments spread over nodes, with exact bookkeeping of what was acknowledged.

    A 2xx is acknowledged; a connection error, a 504 or a 503 that may have applied is
    ambiguous (it widens the upper bound of the totals); a 503 whose problem says
    `"may_have_applied": false` is refused (nothing applied), counted in `refused` so a test
    can tell a cluster that turned writes away from one that took them; any other status is
    a failure the test should look at.
    """

    def __init__(self, cluster: Cluster, ns: str, names: list[str], workers: int = 6) -> None:
        self.cluster = cluster
        self.ns = ns
        self.names = names
        self.workers = workers
        self.targets: list[Node] = []
        self.acked: dict[str, int] = dict.fromkeys(names, 0)
        self.ambiguous: dict[str, int] = dict.fromkeys(names, 0)
        self.ok = 0
        self.refused = 0  # requests answered 503 with may_have_applied: false
        self.refusals: list[Any] = []  # the first few of their bodies, to show
        self.errors: list[Any] = []
        self.totals: dict[str, int] = {}
        self.acked_at: list[tuple[float, int]] = []
        self.killed_at = 0.0
        # acknowledged increments: (sent at, acknowledged at, name, delta)
        self.events: list[tuple[float, float, str, int]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, targets: list[Node]) -> None:
        self.targets = list(targets)
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]

    async def _worker(self, index: int) -> None:
        step = 0
        while not self._stop.is_set():
            step += 1
            targets = [t for t in self.targets if t.running] or self.targets
            node = targets[(index + step) % len(targets)]
            name = self.names[(index * 7 + step) % len(self.names)]
            delta = 1 + (step % 5)
            sent = time.monotonic()
            try:
                status, body = await self.cluster.increment(node, self.ns, name, delta)
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.ambiguous[name] += delta
                await asyncio.sleep(0.05)
                continue
            if status == 200:
                self.acked[name] += delta
                self.acked_at.append((time.monotonic(), delta))
                self.events.append((sent, time.monotonic(), name, delta))
                self.ok += 1
            elif status == 503 and isinstance(body, dict) and body.get("may_have_applied") is False:
                self.refused += 1
                if len(self.refusals) < 5:
                    self.refusals.append(body)
                await asyncio.sleep(0.05)
            elif status in (503, 504):
                self.ambiguous[name] += delta
                await asyncio.sleep(0.05)
            else:
                self.errors.append((status, body))

    def assert_mostly_acknowledged(self, share: float = 0.1) -> None:
        """At most `share` of the answered writes were refused (503, nothing applied)."""
        answered = self.ok + self.refused
        assert self.refused <= share * answered, (
            f"{self.refused} of {answered} writes refused; first: {self.refusals}"
        )

    async def run_until(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more increments have been acknowledged."""
        goal = self.ok + count

        async def reached() -> bool:
            return self.ok >= goal

        try:
            await eventually(reached, f"{count} acknowledged increments", timeout, every=0.02)
        except AssertionError as error:
            raise AssertionError(
                f"{error}; {self.refused} refused (first: {self.refusals}), "
                f"errors: {self.errors[:3]}"
            ) from None

    async def run_for(self, seconds: float) -> None:
        """Let the stream run this long; it must acknowledge something meanwhile."""
        before = self.ok
        await asyncio.sleep(seconds)
        assert self.ok > before, f"no increment acknowledged in {seconds}s: {self.errors[:3]}"

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def check_totals(self, reader: Node) -> None:
        """No request failed outright, and each quorum-read total holds every acknowledged
        increment and nothing but acknowledged or ambiguous ones; kept in self.totals."""
        assert not self.errors, self.errors[:5]
        self.totals = {}
        for name in self.names:
            total = await self.cluster.value(reader, self.ns, name, "quorum")
            low, high = self.acked[name], self.acked[name] + self.ambiguous[name]
            assert low <= total <= high, (name, low, total, high)
            self.totals[name] = total

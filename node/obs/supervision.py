"""Supervised background loops: none of them dies silently, none of them dies at all.

A node's background work (write-behind, history, gossip and the hand-off it drives) runs as
loops of *turns*: wait for the next turn (`pause`), then do one (`turn`). The supervisor owns
the loop, so the loops themselves hold no error handling of their own. An unexpected error
in a turn (anything but cancellation) is

- logged once per streak of failures, with its traceback (the next turn that succeeds logs
  that the loop is back, and how many turns failed),
- counted per loop (`errors`, exported as counters_loop_errors_total{loop}),
- reported in /readyz's body while the streak lasts (loop, last error, since when),

and the loop waits `backoff(streak)` seconds and carries on. A turn that reports its
failure through its own state (the persister's `healthy`) is not an error here: errors are
what its author did not expect. Work that runs once per turn of another loop (the hand-off
step gossip starts) reports with `run_once`, under a name of its own.

Policy is a pure function (`backoff`); time comes from a clock given at construction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("counters.supervision")
BACKOFF_FIRST_S = 0.1  # the pause after a loop's first failed turn
BACKOFF_MAX_S = 5.0  # the longest pause between failed turns

Turn = Callable[[], Awaitable[object]]


def backoff(streak: int, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait after the `streak`-th failed turn in a row: doubling from first_s, at
    most max_s (no jitter: loops of one node fail for their own reasons, not in a herd)."""
    if streak <= 0:
        return 0.0
    return min(max_s, first_s * 2.0 ** min(streak - 1, 30))


@dataclass
class LoopHealth:
    """One loop's record: how many turns failed, and the current streak, if any."""

    name: str
    errors: int = 0  # unexpected errors since the node started
    turns: int = 0  # turns completed without an unexpected error
    streak: int = 0  # failed turns in a row; 0 while the loop is well
    last_error: str = ""
    since: float | None = None  # unix time the current streak began

    @property
    def failing(self) -> bool:
        return self.streak > 0

    def status(self) -> dict[str, Any]:
        return {
            "loop": self.name,
            "failing": self.failing,
            "errors": self.errors,
            "streak": self.streak,
            "last_error": self.last_error,
            "since": None if self.since is None else round(self.since, 3),
        }


class Supervisor:
    """Runs a node's background loops and keeps their records."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.loops: dict[str, LoopHealth] = {}

    def health(self, name: str) -> LoopHealth:
        found = self.loops.get(name)
        if found is None:
            found = self.loops[name] = LoopHealth(name)
        return found

    def start(self, name: str, turn: Turn, pause: Turn) -> asyncio.Task[None]:
        """Run `pause` then `turn`, forever, as a task named `name`."""
        self.health(name)
        return asyncio.create_task(self.run(name, turn, pause), name=name)

    async def run(self, name: str, turn: Turn, pause: Turn) -> None:
        health = self.health(name)
        while True:
            try:
                await pause()
                await turn()
            except Exception as error:  # the point of a supervisor; cancellation passes
                self.failed(health, error)
                await asyncio.sleep(backoff(health.streak))
            else:
                self.succeeded(health)

    async def run_once(self, name: str, turn: Turn) -> None:
        """One turn of work another loop starts (in its own task), recorded under `name`;
        never raises but for cancellation."""
        health = self.health(name)
        try:
            await turn()
        except Exception as error:
            self.failed(health, error)
        else:
            self.succeeded(health)

    def failed(self, health: LoopHealth, error: BaseException) -> None:
        health.errors += 1
        health.streak += 1
        health.last_error = f"{type(error).__name__}: {error}"
        if health.streak == 1:
            health.since = self.clock()
            log.error(
                "background loop %s failed; it carries on, backing off (logged once per streak)",
                health.name,
                exc_info=error,
                extra={"loop": health.name},
            )

    def succeeded(self, health: LoopHealth) -> None:
        health.turns += 1
        if health.streak:
            log.info(
                "background loop %s is back after %d failed turns",
                health.name,
                health.streak,
                extra={"loop": health.name},
            )
            health.streak, health.since = 0, None

    def failing(self) -> list[LoopHealth]:
        return [health for health in self.loops.values() if health.failing]

    def status(self) -> list[dict[str, Any]]:
        return [health.status() for health in self.loops.values()]


def every(interval_s: float, jitter: float = 0.0) -> Turn:
    """A pause for `Supervisor.start`: the next turn starts `interval_s` after the previous
    one started (at once if that took longer), scaled by a random factor in [1 - jitter,
    1 + jitter] so that nodes started together do not act in lockstep."""
    last: list[float] = []

    async def pause() -> None:
        now = time.monotonic()
        if last:
            wait = max(0.0, interval_s - (now - last[0]))
            if jitter:
                wait *= random.uniform(1.0 - jitter, 1.0 + jitter)
            await asyncio.sleep(wait)
            last[0] = time.monotonic()
        else:
            last.append(now)

    return pause

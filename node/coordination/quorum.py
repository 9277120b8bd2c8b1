"""Waiting for enough replicas: one waiter over many groups of peer futures.

A group is one key's replies; it is satisfied with `needed` successes and lost when too many
fail to ever get there. A read group may hold spare replicas, asked when one fails or has not
answered within `hedge_after` seconds, so a healthy read touches exactly R replicas and a
silent one costs a short delay, not the request timeout. The waiter resolves once every
group is satisfied, fails at once when one is lost, and times out after the request timeout
(504).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from node.base.errors import QuorumTimeout, QuorumUnavailable

Starter = Callable[[], "asyncio.Future[Any]"]


class QuorumWait:
    def __init__(self, what: str) -> None:
        self._waiter: asyncio.Future[None] | None = None  # made on the first group to wait for
        self._open_groups = 0
        self._what = what
        # consistency=one: per write, per peer, whether its frame was handed to the connection
        self.sends: list[list[asyncio.Future[bool]]] = []

    def add(
        self,
        futures: list[asyncio.Future[Any]],
        needed: int,
        on_success: Callable[[Any], object],
        spares: list[Starter] | None = None,
        hedge_after: float | None = None,
    ) -> None:
        if needed <= 0:
            for future in futures:
                future.add_done_callback(lambda f: _deliver(f, on_success))
            return
        waiter = self._waiter
        if waiter is None or (
            waiter.done() and not waiter.cancelled() and waiter.exception() is None
        ):
            # the first group, or one added after every earlier group was satisfied (a batch
            # adds its fresh actor's writes and its reads after an await): wait for it too
            self._waiter = asyncio.get_running_loop().create_future()
        self._open_groups += 1
        group = _Group(self, needed, len(futures), on_success, spares or [])
        for future in futures:
            future.add_done_callback(group.done)
        if spares and hedge_after is not None:
            group.hedge = asyncio.get_running_loop().call_later(hedge_after, group.hedged)

    def _satisfied(self) -> None:
        self._open_groups -= 1
        if self._open_groups == 0 and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _lost(self) -> None:
        self._fail(QuorumUnavailable, "too few replicas answered")

    def _fail(self, error: type[QuorumUnavailable | QuorumTimeout], why: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                error(
                    f"{why}; the {self._what} may still apply",
                    may_have_applied=self._what != "read",
                )
            )

    async def wait(self, timeout: float) -> None:
        if self._waiter is None:
            return  # nothing to wait for
        timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        try:
            await self._waiter
        finally:
            timer.cancel()

    async def sent_on(self, timeout: float) -> None:
        """For writes that wait for no peer (consistency=one): return once, for each write,
        one peer's connection took its frame or every attempt failed; or after timeout. The
        writes stand either way (W=1); this only keeps the answer from overtaking them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for sends in self.sends:
                    pending = set(sends)
                    while pending:
                        done, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                        if any(future.result() for future in done):
                            break

    def _expire(self) -> None:
        self._fail(QuorumTimeout, "replicas did not answer in time")


def _deliver(future: asyncio.Future[Any], on_success: Callable[[Any], object]) -> bool:
    if future.cancelled() or future.exception() is not None:
        return False
    on_success(future.result())
    return True


class _Group:
    __slots__ = ("failed", "hedge", "needed", "ok", "on_success", "owner", "spares", "total")

    def __init__(
        self,
        owner: QuorumWait,
        needed: int,
        total: int,
        on_success: Callable[[Any], object],
        spares: list[Starter],
    ) -> None:
        self.owner, self.needed, self.total = owner, needed, total
        self.on_success, self.spares = on_success, spares
        self.ok = self.failed = 0
        self.hedge: asyncio.TimerHandle | None = None
        if total + len(spares) < needed:
            owner._lost()

    def done(self, future: asyncio.Future[Any]) -> None:
        if _deliver(future, self.on_success):
            self.ok += 1
            if self.ok == self.needed:
                if self.hedge is not None:
                    self.hedge.cancel()
                self.owner._satisfied()
            return
        self.failed += 1
        if self.spares:
            self.total += 1
            self.spares.pop(0)().add_done_callback(self.done)
        elif self.ok < self.needed and self.total - self.failed < self.needed:
            self.owner._lost()  # successes plus replies still due can no longer reach needed

    def hedged(self) -> None:
        """Too slow: ask a spare for each answer still missing, beside the silent peers."""
        waiter = self.owner._waiter
        if waiter is None or waiter.done():
            return
        for _ in range(min(self.needed - self.ok, len(self.spares))):
            self.total += 1
            self.spares.pop(0)().add_done_callback(self.done)

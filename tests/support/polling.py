"""The one way a test waits for something: poll within a bound, never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


async def eventually(
    check: Callable[[], Awaitable[Any] | Any],
    what: str,
    timeout: float = 30.0,
    every: float = 0.1,
    show: Callable[[], object] | None = None,
) -> Any:
    """Poll check() (a coroutine function or a plain one) until it returns a truthy value,
    and return that value.

    A connection error or timeout raised by check() counts as "not yet" (the node may still be
    starting); any other exception propagates at once. After `timeout` seconds, fail with an
    AssertionError naming `what` and the last value or error seen, or what show() returns.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(every)
    seen = show() if show is not None else repr(last)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {seen}")

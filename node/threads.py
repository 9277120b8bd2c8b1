"""Blocking calls in worker threads that finish even when their caller is cancelled.

`asyncio.to_thread` gives up waiting when its caller is cancelled, but the thread runs on.
A caller holding a lock around a sqlite call would then release it, and `close()` could
close the database under the running call: a segmentation fault at shutdown under load.
`in_thread` waits for the thread either way, then lets the cancellation go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """function(*args) in a worker thread; returns (or raises) only once it has finished."""
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.cancelled():  # the worker itself was cancelled: nothing runs any more
                raise
            cancelled = True  # ours: wait for the thread, then pass the cancellation on
    if cancelled:
        raise asyncio.CancelledError
    return result

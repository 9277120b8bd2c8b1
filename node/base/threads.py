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
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True  # wait for the thread all the same, then pass this on
        except Exception:
            break  # the thread's error: raised below, unless we were cancelled
    if cancelled:  # the caller's cancellation wins over whatever the thread did
        error = None if future.cancelled() else future.exception()
        raise asyncio.CancelledError from error
    return future.result()

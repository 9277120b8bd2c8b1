"""Client: the blocking face of AsyncClient, for code without an event loop.

An AsyncClient runs on an event loop in a daemon thread of the Client's own; every method
but add() runs its coroutine there and waits for the answer. add() touches only the buffer,
under a lock shared with the loop's flushes, so it costs no hop between threads; when the
buffer is full it waits for room (overflow="block", up to block_timeout_s) or raises
BufferFull (overflow="raise"). A Client still open when the interpreter exits is closed
then (atexit): what add() buffered is sent, not dropped with the daemon thread.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections.abc import Coroutine, Generator, Iterable, Sequence
from typing import Any, TypeVar

from counters_client import errors
from counters_client.aio import AsyncClient, Stats
from counters_client.feed import IDLE_TIMEOUT_S
from counters_client.realtime import Aggregate, FeedItem, Top, Windowed

T = TypeVar("T")
log = logging.getLogger("counters_client")


class Client:
    """The blocking client: the same methods as AsyncClient (see it for the options), plus
    overflow ("block" or "raise") and block_timeout_s (None: deadline_s) for add()."""

    def __init__(
        self,
        nodes: str | Sequence[str],
        token: str | None = None,
        *,
        overflow: str = "block",
        block_timeout_s: float | None = None,
        **options: Any,
    ) -> None:
        if overflow not in ("block", "raise"):
            raise ValueError('overflow must be "block" or "raise"')
        self.overflow = overflow
        self._lock = threading.Condition()
        self._client = AsyncClient(nodes, token, _lock=self._lock, **options)
        self.block_timeout_s = (
            self._client.transport.options.deadline_s
            if block_timeout_s is None
            else block_timeout_s
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="counters-client", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._client.start())
        except BaseException:
            self._stop_loop()
            raise
        self._at_exit = _closer(weakref.ref(self))
        atexit.register(self._at_exit)
        # no hook left per Client collected unclosed; not run at exit (it would drop the hook)
        weakref.finalize(self, atexit.unregister, self._at_exit).atexit = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def close(self) -> None:
        """Flush, stop the loop thread; raise the first failure flush() has not raised."""
        if self._loop.is_closed():
            return
        atexit.unregister(self._at_exit)
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def add(self, namespace: str, name: str, delta: int = 1) -> None:
        client = self._client
        with self._lock:
            deadline = None
            while True:
                # also after waiting for room: close() may have taken its last flush since
                if client._closed:
                    raise RuntimeError("the client is closed")
                try:
                    pending = client.buffer.add(namespace, name, delta)
                    break
                except errors.BufferFull:
                    if self.overflow == "raise":
                        raise
                    now = time.monotonic()
                    deadline = deadline or now + self.block_timeout_s
                    if now >= deadline:
                        raise
                    self._lock.wait(deadline - now)
            batcher = client.batcher
            if pending < client.max_batch or batcher.kicked:
                return
            batcher.kicked = True
        self._loop.call_soon_threadsafe(batcher.flush_now)

    @property
    def buffered(self) -> int:
        return self._client.buffered

    @property
    def stats(self) -> Stats:
        return self._client.stats

    @property
    def latencies(self) -> list[float]:
        return list(self._client.latencies)

    @property
    def topology(self) -> Any:
        return self._client.topology

    def flush(self) -> None:
        self._run(self._client.flush())

    def incr(
        self, namespace: str, name: str, delta: int = 1, idempotency_key: str | None = None
    ) -> int:
        return self._run(self._client.incr(namespace, name, delta, idempotency_key))

    def get(self, namespace: str, name: str, consistency: str | None = None) -> int:
        return self._run(self._client.get(namespace, name, consistency))

    def get_many(
        self, namespace: str, names: Iterable[str], consistency: str | None = None
    ) -> dict[str, int]:
        return self._run(self._client.get_many(namespace, list(names), consistency))

    def batch(
        self,
        namespace: str,
        ops: Sequence[tuple[str, str] | tuple[str, str, int]],
        idempotency_key: str | None = None,
    ) -> list[int | errors.CountersError]:
        return self._run(self._client.batch(namespace, ops, idempotency_key))

    def reset(self, namespace: str, name: str) -> int:
        return self._run(self._client.reset(namespace, name))

    def history(self, namespace: str, name: str, **query: Any) -> dict[str, Any]:
        return self._run(self._client.history(namespace, name, **query))

    def rollups(self, namespace: str, **query: Any) -> dict[str, Any]:
        return self._run(self._client.rollups(namespace, **query))

    def get_window(
        self, namespace: str, name: str, window: str = "15m", consistency: str | None = None
    ) -> Windowed:
        return self._run(self._client.get_window(namespace, name, window, consistency))

    def aggregate(self, namespace: str, prefix: str = "", window: str | None = None) -> Aggregate:
        return self._run(self._client.aggregate(namespace, prefix, window))

    def top(
        self,
        namespace: str,
        k: int = 10,
        by: str = "value",
        window: str | None = None,
        prefix: str = "",
    ) -> Top:
        return self._run(self._client.top(namespace, k, by, window, prefix))

    def events(
        self,
        namespace: str,
        prefix: str = "",
        last_event_id: str | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> Generator[FeedItem, None, None]:
        """The change feed as a blocking iterator (AsyncClient.events); each step waits for
        the next event. Close it (or leave the for loop) to end the stream."""
        feed = self._client.events(namespace, prefix, last_event_id, idle_timeout_s)
        try:
            while True:
                try:
                    item = self._run(feed.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._loop.is_closed():
                self._run(feed.aclose())


def _closer(ref: weakref.ReferenceType[Client]) -> Any:
    """Client.close at interpreter exit, for a client the program left open (the loop's
    daemon thread still runs then); the weak reference leaves its life to the program."""

    def close_at_exit() -> None:
        client = ref()
        if client is None or client._loop.is_closed():
            return
        pending = client.buffered
        if pending:
            log.warning("a Client left open at exit: sending its %d pending counters", pending)
        try:
            client.close()
        except Exception as error:  # nothing left to raise it to
            log.error("a Client closed at exit failed: %s", error)

    return close_at_exit

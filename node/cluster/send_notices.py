"""Peer links that say when a queued write has left: what a consistency=one write waits for.

A write at consistency=one waits for no replica's reply, but it must not be answered while
its update still sits in a link's queue: the link's sender writes the next frame at a later
turn of the event loop, so a coordinator killed right after answering would take the update
with it (tests/cluster/test_consistency_one.py lost 19 of 20 such writes). `written(reply)`
resolves True once the frame carrying a queued write was handed to the connection (on
loopback, that is the peer's socket; elsewhere the kernel's send buffer), and False if the
write fails first. The coordinator answers then (coordination/quorum.py, QuorumWait.sent_on).

This extends the link's sender at its two steps, taking a frame and writing it, so the
link module itself stays about one thing: framing and connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node.cluster.links import PeerLink


class NoticingLink(PeerLink):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # reply future of a queued write -> its notice (see written)
        self._notices: dict[asyncio.Future[Any], asyncio.Future[bool]] = {}
        self._taken: list[list[Any]] | None = None  # the frame the sender is about to write

    def written(self, reply: asyncio.Future[Any]) -> asyncio.Future[bool]:
        """For a write just queued (its reply future): True once the frame that carries it
        has been handed to the connection, False if it fails before."""
        notice: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if reply.done():
            notice.set_result(False)
            return notice
        self._notices[reply] = notice
        reply.add_done_callback(lambda done: self._notify([[done]], False))
        return notice

    def _next_frame(self) -> tuple[int, Any, list[list[Any]]]:
        kind, body, waiting = super()._next_frame()
        self._taken = waiting  # the sender writes it next, with nothing awaited between
        return kind, body, waiting

    async def _send_frame(self, *args: Any, **kwargs: Any) -> None:
        taken, self._taken = self._taken, None  # None: a request of call(), not the sender's
        sent = False
        try:
            await super()._send_frame(*args, **kwargs)
            sent = True
        finally:
            if taken is not None and self._notices:
                self._notify(taken, sent)

    def _notify(self, waiting: list[list[Any]], sent_frame: bool) -> None:
        """sent_frame: the frame carrying these was written, unless its sending failed
        (which fails their futures at once) or they are done otherwise (closed, replied)."""
        for futures in waiting:
            for future in futures:
                notice = self._notices.pop(future, None)
                if notice is not None and not notice.done():
                    failed = future.done() and (future.cancelled() or future.exception())
                    notice.set_result(sent_frame and not failed)
